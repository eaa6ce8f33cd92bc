"""Shared SQLite plumbing for the embedded broker, result store and beat store.

Owns the default database file (``$CELERIAC_SQLITE_PATH`` or
``./celeriac.sqlite3``), ``sqlite://`` URL parsing, one connection per thread
(reopened after ``fork``) in WAL mode with a busy timeout, ``BEGIN IMMEDIATE``
transactions that turn SQLite errors into
:class:`~celeriac.exceptions.OperationalError`, and the cheap
``PRAGMA data_version`` wait that blocked readers use instead of a push wake-up.

A write transaction that held the write lock for long (another thread of this
process held the GIL meanwhile: a task in C code) has locked every process out,
lease renewers included; before it commits, the callbacks registered with
:func:`on_long_transaction` for its file run inside it (the broker renews the
leases this process holds, which no one could renew while it waited).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl

from ... import clock, retry
from ...exceptions import ImproperlyConfigured, OperationalError
from .forkgate import holding_locks

logger = logging.getLogger("celeriac.sqlite")

ENV_PATH = "CELERIAC_SQLITE_PATH"
#: seconds a write transaction may hold the lock before the long-transaction callbacks run
LONG_TRANSACTION = 0.25
_long_callbacks: dict[str, list[weakref.WeakMethod[Callable[[sqlite3.Connection], None]]]] = {}
_SYNC = {"durable": "FULL", "full": "FULL", "fast": "NORMAL", "normal": "NORMAL"}


def default_path() -> str:
    """The default database file: ``$CELERIAC_SQLITE_PATH``, else ./celeriac.sqlite3."""
    path = os.environ.get(ENV_PATH) or "celeriac.sqlite3"
    return os.path.abspath(os.path.expanduser(path))


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """``sqlite:///rel/path`` -> ``rel/path``; ``sqlite:////abs`` -> ``/abs``;
    ``sqlite://`` -> :func:`default_path`. A ``?key=value`` query becomes options."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    rest, _, query = rest.partition("?")
    path = rest[1:] if rest.startswith("/") else rest
    if path == ":memory:":
        raise ImproperlyConfigured(f"{url!r}: use memory:// for an in-memory broker")
    return (path or default_path()), dict(parse_qsl(query))


class Connections:
    """One SQLite connection per thread (reopened in a forked child), WAL + busy_timeout."""

    def __init__(self, path: str, *, durability: str = "durable",
                 schema: str = "") -> None:
        try:
            self.synchronous = _SYNC[durability]
        except KeyError:
            raise ImproperlyConfigured(
                f"sqlite durability must be 'durable' or 'fast', not {durability!r}"
            ) from None
        self.path, self.schema = path, schema
        #: connections opened by a parent process: never closed (nor freed) in a child
        self._inherited: list[sqlite3.Connection] = []
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[tuple[threading.Thread, sqlite3.Connection]] = []

    def get(self) -> sqlite3.Connection:
        """This thread's connection; never one inherited across ``fork``."""
        if self._pid != os.getpid():
            self._inherited.extend(conn for _, conn in self._open)
            self._reset()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            self._local.synchronous = self.synchronous
            with self._lock:  # close the connections of threads that ended
                dead = [c for t, c in self._open if not t.is_alive()]
                self._open = [(t, c) for t, c in self._open if t.is_alive()]
                self._open.append((threading.current_thread(), conn))
            for old in dead:
                old.close()
        return conn

    def tx(self, *, durable: bool = True) -> Any:
        """A write transaction on this thread's connection. ``durable=False`` commits
        with ``synchronous=NORMAL``: for writes whose loss in a power failure only
        causes a redelivery (leases, acks). WAL keeps commits in order, so the next
        durable commit makes the earlier ones durable too."""
        conn = self.get()
        wanted = self.synchronous if durable else "NORMAL"
        if self._local.synchronous != wanted:
            conn.execute(f"PRAGMA synchronous = {wanted}")
            self._local.synchronous = wanted
        return transaction(conn, self.path)

    def _connect(self) -> sqlite3.Connection:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 5000")
            with holding_locks():  # switching to WAL takes the database's lock
                _use_wal(conn)
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            with transaction(conn, self.path):
                for statement in self.schema.split(";"):
                    if statement.strip():
                        conn.execute(statement)
        except sqlite3.Error as exc:
            raise OperationalError(f"sqlite {self.path}: {exc}") from exc
        return conn

    def close(self) -> None:
        """Close this process's connections (all threads)."""
        if self._pid != os.getpid():
            return
        with self._lock:
            conns, self._open = self._open, []
        for _, conn in conns:
            conn.close()
        self._local = threading.local()


#: How long a writer waits for the write lock before giving up (same as busy_timeout).
BUSY_TIMEOUT = 5.0


def on_long_transaction(path: str, callback: Callable[[sqlite3.Connection], None]) -> None:
    """Run the bound method ``callback(conn)`` inside every write transaction of this
    process on ``path`` that held the write lock over :data:`LONG_TRANSACTION` seconds,
    before it commits (kept as a weak reference: it goes with its object)."""
    _long_callbacks.setdefault(os.path.abspath(path), []).append(
        weakref.WeakMethod(callback))


def _run_long_callbacks(conn: sqlite3.Connection, path: str) -> None:
    refs = _long_callbacks.get(os.path.abspath(path))
    if not refs:
        return
    refs[:] = [ref for ref in refs if ref() is not None]
    for ref in list(refs):
        callback = ref()
        if callback is None:
            continue
        try:
            callback(conn)
        except sqlite3.Error as exc:  # the transaction's own work still commits
            logger.warning("sqlite %s: after a long transaction: %s", path, exc)


def begin_immediate(conn: sqlite3.Connection, path: str) -> float:
    """Take the write lock, trying every 50 us doubling to 2 ms for up to 5 s.

    This is SQLite's busy handler done better, not a retry of a failed call:
    SQLite's own handler sleeps at least 1 ms per try; with several worker
    processes each holding the lock for well under a millisecond, that sleep was
    most of the cost of a task on this broker, so writers poll with a short
    backoff instead (``busy_timeout`` is lifted to 0 only around BEGIN). Inside
    a publish the wait also ends at the publish deadline (:func:`retry.time_left`).
    Returns when (monotonic) the successful attempt began: the lock is held since.
    """
    left = retry.time_left()
    wait = BUSY_TIMEOUT if left is None else max(0.0, min(BUSY_TIMEOUT, left))
    delay, deadline = 0.00005, time.monotonic() + wait
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                attempt = time.monotonic()
                conn.execute("BEGIN IMMEDIATE")
                return attempt
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise OperationalError(f"sqlite {path}: {exc}") from exc
            except sqlite3.Error as exc:
                raise OperationalError(f"sqlite {path}: {exc}") from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.002)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _use_wal(conn: sqlite3.Connection, patience: float = 5.0) -> None:
    """Switch the database to WAL. The switch (and, rarely, the first read of a database
    another connection is recovering) takes its lock without waiting on the busy handler,
    so connections opening a database together may see "database is locked": retry for
    ``patience`` seconds. A database already in WAL needs no switch."""
    give_up = time.monotonic() + patience
    delay = 0.001
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > give_up:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


@contextmanager
def transaction(conn: sqlite3.Connection, path: str) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; SQLite errors become OperationalError.
    A fork waits for it to end (:mod:`.forkgate`)."""
    with holding_locks():
        locked_at = begin_immediate(conn, path)
        try:
            yield conn
            if time.monotonic() - locked_at > LONG_TRANSACTION:
                _run_long_callbacks(conn, path)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise OperationalError(f"sqlite {path}: {exc}") from exc
            raise


def data_version(conn: sqlite3.Connection) -> int:
    """Changes whenever another connection commits to the database."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def poll_interval(idle: float) -> float:
    """How long to sleep between ``data_version`` checks after ``idle`` quiet seconds."""
    for quiet, interval in ((1.0, 0.002), (10.0, 0.005), (60.0, 0.01)):
        if idle < quiet:
            return interval
    return 0.025


def wait_for_change(conn: sqlite3.Connection, version: int, deadline: float,
                    due: float | None, idle_since: float) -> bool:
    """Sleep until another connection commits, ``due`` (epoch) passes or ``deadline``
    (monotonic) comes; return False only on the deadline."""
    while True:
        now = time.monotonic()
        if now >= deadline:
            return False
        time.sleep(min(poll_interval(now - idle_since), deadline - now))
        if data_version(conn) != version or (due is not None and clock.time() >= due):
            return True
