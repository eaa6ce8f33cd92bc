"""One LISTEN connection per process and database, shared by every waiting thread.

Waiters :meth:`Listener.subscribe` to channels (a queue's or a result key's, see
:func:`celeriac.brokers.postgres.sql.channel`), remember :meth:`version` before
they look at the database, and :meth:`wait` until a NOTIFY on one of their channels
moved a version, a deadline passes, or the listener reconnected. LISTEN runs on the
listener's own thread (woken through a pipe), so a subscription is confirmed before
:meth:`subscribe` returns and a NOTIFY committed after that cannot be missed.

After a lost connection the thread reconnects (backing off up to 1 s), LISTENs to
every channel again and bumps every version: waiters re-read the database, which
covers notifications sent while it was away. While it is disconnected
:attr:`healthy` is false and waiters fall back to re-checking every 0.5 s.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql as pgsql

from ... import retry

logger = logging.getLogger("celeriac.postgres")


class Listener:
    """LISTEN/NOTIFY fan-out for one process."""

    def __init__(self, conninfo: str, safe_url: str) -> None:
        self.conninfo, self.safe_url = conninfo, safe_url
        self._cond = threading.Condition()
        self._versions: dict[str, int] = {}
        self._counts: dict[str, int] = {}       # subscribers per channel
        self._listening: set[str] = set()       # LISTEN executed on the current connection
        self._epoch = 0                          # bumped on every reconnect
        self._wake_r, self._wake_w = os.pipe()
        self._stopped = False
        self.healthy = False
        self._thread = threading.Thread(target=self._run, name="celeriac-pg-listener",
                                        daemon=True)
        self._thread.start()

    # -- waiters ------------------------------------------------------------------
    def subscribe(self, channels: Iterable[str], timeout: float = 5.0) -> bool:
        """Listen to ``channels``; True once every one is confirmed."""
        names = list(dict.fromkeys(channels))
        with self._cond:
            for name in names:
                self._counts[name] = self._counts.get(name, 0) + 1
        self._poke()
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(n in self._listening for n in names):
                left = deadline - time.monotonic()
                if left <= 0 or self._stopped:
                    return False
                self._cond.wait(left)
        return True

    def unsubscribe(self, channels: Iterable[str]) -> None:
        with self._cond:
            for name in dict.fromkeys(channels):
                left = self._counts.get(name, 0) - 1
                if left > 0:
                    self._counts[name] = left
                else:
                    self._counts.pop(name, None)
        self._poke()

    def listening(self, channels: Iterable[str]) -> bool:
        with self._cond:
            return self.healthy and all(n in self._listening for n in channels)

    def version(self, channels: Iterable[str]) -> tuple[int, ...]:
        with self._cond:
            return (self._epoch, *(self._versions.get(n, 0) for n in channels))

    def wait(self, channels: list[str], seen: tuple[int, ...], timeout: float) -> bool:
        """Wait until a version differs from ``seen``; False on timeout."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while True:
                now = (self._epoch, *(self._versions.get(n, 0) for n in channels))
                if now != seen:
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or self._stopped:
                    return False
                self._cond.wait(left)

    # -- the thread -------------------------------------------------------------------
    def _poke(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _run(self) -> None:
        backoff = 0.05
        streak = retry.Streak(f"PostgreSQL at {self.safe_url}", "listen")  # = Database.where
        while not self._stopped:
            try:
                conn = psycopg.connect(self.conninfo, autocommit=True)
            except psycopg.Error as exc:
                logger.debug("listener: cannot connect to %s: %s", self.safe_url, exc)
                streak.failed(exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            streak.ok()
            try:
                self._serve(conn)
            except (psycopg.Error, OSError) as exc:
                if not self._stopped:  # an outage is reported once (celeriac.retry)
                    logger.debug("listener: connection to %s lost (%s); reconnecting",
                                 self.safe_url, exc)
            finally:
                with self._cond:
                    self.healthy = False
                    self._listening.clear()
                    self._epoch += 1
                    self._cond.notify_all()
                try:
                    conn.close()
                except Exception:
                    pass

    def _sync_channels(self, conn: psycopg.Connection[Any]) -> None:
        with self._cond:
            wanted = set(self._counts)
            add, drop = wanted - self._listening, self._listening - wanted
        for name in drop:
            conn.execute(pgsql.SQL("UNLISTEN {}").format(pgsql.Identifier(name)))
        for name in add:
            conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(name)))
        if add or drop:
            with self._cond:
                self._listening = (self._listening - drop) | add
                self._cond.notify_all()

    def _serve(self, conn: psycopg.Connection[Any]) -> None:
        pgconn = conn.pgconn
        conn.add_notify_handler(lambda note: self._bump([note.channel]))
        self._sync_channels(conn)
        with self._cond:
            self.healthy = True
            self._epoch += 1  # whatever was sent while away: everyone looks again
            self._cond.notify_all()
        sock = pgconn.socket
        while not self._stopped:
            ready, _, _ = select.select([sock, self._wake_r], [], [], 30.0)
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
                self._sync_channels(conn)
            if not ready:
                conn.execute("SELECT 1")  # keep-alive: notices a dead server
                continue
            if sock in ready:
                pgconn.consume_input()
                if pgconn.status != psycopg.pq.ConnStatus.OK:
                    raise psycopg.OperationalError("listener connection closed")
            self._dispatch(pgconn)

    def _dispatch(self, pgconn: Any) -> None:
        got = []
        while True:
            note = pgconn.notifies()
            if note is None:
                break
            got.append(note.relname.decode("utf-8", "replace"))
        if got:
            self._bump(got)

    def _bump(self, names: list[str]) -> None:
        with self._cond:
            for name in names:
                self._versions[name] = self._versions.get(name, 0) + 1
            self._cond.notify_all()

    def close(self) -> None:
        self._stopped = True
        self._poke()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(2.0)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
