"""Ending PostgreSQL round trips at a caller's deadline, even when the server never answers.

psycopg waits on its socket without a timeout, and ``statement_timeout`` needs a
server that still answers. During a call with a deadline (a publish bounded by
``broker_publish_timeout``, see :func:`celeriac.retry.time_left`) every pooled
connection in use is registered with :data:`WATCHDOG`: one daemon thread per
process that, when a deadline passes, shuts the connection's socket down. The
blocked read then fails at once (psycopg raises ``OperationalError``, the
connection is broken and the pool discards it) and the caller's retry policy
decides what happens next. Outside a deadline nothing is registered.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass
class Watch:
    """One registered connection: its socket and whether the watchdog cut it."""

    fileno: int
    deadline: float
    cut: bool = False


class Watchdog:
    """Shuts down the sockets of connections still in use after their deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._watches: dict[int, Watch] = {}
        self._keys = itertools.count()
        self._pid = 0

    @contextmanager
    def guard(self, conn: Any, deadline: float) -> Iterator[Watch]:
        """Watch ``conn`` until the block ends; cut its socket at ``deadline`` (monotonic).

        A connection cut after its work finished is closed on the way out, so the
        pool never hands it out again.
        """
        watch = Watch(conn.pgconn.socket, deadline)
        key = next(self._keys)
        with self._cond:
            self._ensure_thread()
            self._watches[key] = watch
            self._cond.notify()
        try:
            yield watch
        finally:
            with self._cond:  # after this the watchdog never touches the socket again
                self._watches.pop(key, None)
            if watch.cut and not conn.closed:
                conn.close()

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # first use, or a child after fork: a thread of its own
            self._pid = os.getpid()
            self._watches.clear()
            threading.Thread(target=self._run, name="celeriac-pg-deadline", daemon=True).start()

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for key, watch in list(self._watches.items()):
                    if watch.deadline <= now:
                        del self._watches[key]
                        watch.cut = True
                        _shut_down(watch.fileno)
                nearest = min((w.deadline for w in self._watches.values()), default=None)
                self._cond.wait(None if nearest is None else max(0.0, nearest - now))


def _shut_down(fileno: int) -> None:
    """Shut down the socket behind ``fileno`` (a duplicate descriptor: libpq keeps its own)."""
    try:
        sock = socket.socket(fileno=os.dup(fileno))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


#: the process's watchdog (its thread starts on first use)
WATCHDOG = Watchdog()
