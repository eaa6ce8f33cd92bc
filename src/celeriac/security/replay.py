"""The store of seal nonces already seen, kept where the broker is (the replay guard).

A worker claims each sealed message's nonce before running it; a second claim
of the same nonce is a replay unless the broker says the delivery is a
redelivery of the same stored message (its own lease lapsed or it was given
back). Entries expire after the replay window, after which the message's age
refuses it anyway. The store follows ``broker_url``, so every worker of a
deployment shares it:

* ``redis://``: ``SET <global_keyprefix>_celeriac.seen.<nonce> 1 NX EX <ttl>``;
* ``sqlite://``: table ``celeriac_seen`` in the broker's file;
* ``postgresql://``: table ``celeriac_seen`` in the broker's schema;
* ``memory://``: a dictionary in the process (the memory broker's reach).

A guard that cannot reach its store raises
:class:`~celeriac.exceptions.OperationalError`; the worker then gives the
message back (counted as a failed delivery), never runs it unchecked.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Mapping
from typing import Any

from ..exceptions import ImproperlyConfigured, OperationalError

#: expired entries are swept every this many claims (SQL stores)
SWEEP_EVERY = 512


class MemoryGuard:
    """Nonces in this process."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._claims = 0

    def claim(self, nonce: str, ttl: float) -> bool:
        now = time.time()
        with self._lock:
            self._claims += 1
            if self._claims % SWEEP_EVERY == 0:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
            expires = self._seen.get(nonce)
            if expires is not None and expires > now:
                return False
            self._seen[nonce] = now + ttl
            return True

    def forget(self, nonce: str) -> None:
        with self._lock:
            self._seen.pop(nonce, None)


class RedisGuard:
    """``SET NX EX`` on the broker's Redis, under its ``global_keyprefix``."""

    def __init__(self, url: str, options: Mapping[str, Any]) -> None:
        from ..brokers.redis.client import get_client

        self.client = get_client(url, options)
        self.prefix = f"{options.get('global_keyprefix') or ''}_celeriac.seen."

    def claim(self, nonce: str, ttl: float) -> bool:
        try:
            return bool(self.client.set(self.prefix + nonce, b"1", nx=True,
                                        ex=max(1, int(ttl + 1))))
        except Exception as exc:
            raise OperationalError(f"replay guard: Redis unreachable: {exc}") from exc

    def forget(self, nonce: str) -> None:
        try:
            self.client.delete(self.prefix + nonce)
        except Exception as exc:
            raise OperationalError(f"replay guard: Redis unreachable: {exc}") from exc


_SQLITE_TABLE = ("CREATE TABLE IF NOT EXISTS celeriac_seen (nonce TEXT PRIMARY KEY, "
                 "expires REAL NOT NULL)")


class SQLiteGuard:
    """Table ``celeriac_seen`` in the broker's database file."""

    def __init__(self, url: str) -> None:
        from ..brokers.sqlite.db import parse_url

        self.path = parse_url(url)[0]
        self._local = threading.local()
        self._claims = 0

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute(_SQLITE_TABLE)
            self._local.conn = conn
        return conn

    def claim(self, nonce: str, ttl: float) -> bool:
        now = time.time()
        try:
            conn = self._conn()
            self._claims += 1
            if self._claims % SWEEP_EVERY == 1:
                conn.execute("DELETE FROM celeriac_seen WHERE expires <= ?", (now,))
            conn.execute("DELETE FROM celeriac_seen WHERE nonce = ? AND expires <= ?",
                         (nonce, now))
            cur = conn.execute("INSERT OR IGNORE INTO celeriac_seen VALUES (?, ?)",
                               (nonce, now + ttl))
            return cur.rowcount == 1
        except sqlite3.Error as exc:
            raise OperationalError(f"replay guard: SQLite {self.path}: {exc}") from exc

    def forget(self, nonce: str) -> None:
        try:
            self._conn().execute("DELETE FROM celeriac_seen WHERE nonce = ?", (nonce,))
        except sqlite3.Error as exc:
            raise OperationalError(f"replay guard: SQLite {self.path}: {exc}") from exc


class PostgresGuard:
    """Table ``celeriac_seen`` in the broker's schema (created on first use)."""

    def __init__(self, url: str, options: Mapping[str, Any]) -> None:
        from ..brokers.postgres import db

        self.db = db.acquire(db.parse_url(url, options))
        self.table = f"{self.db.settings.schema}.celeriac_seen"
        self._ready = False
        self._claims = 0

    def _run(self, statement: str, params: tuple[Any, ...]) -> int:
        try:
            if not self._ready:
                self.db.ensure_schema()  # the broker's schema (created when auto_migrate)
            with self.db.connection() as conn:
                if not self._ready:
                    conn.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (nonce TEXT "
                                 f"PRIMARY KEY, expires DOUBLE PRECISION NOT NULL)")
                    self._ready = True
                return conn.execute(statement, params).rowcount
        except OperationalError:
            raise
        except Exception as exc:
            raise OperationalError(f"replay guard: PostgreSQL: {exc}") from exc

    def claim(self, nonce: str, ttl: float) -> bool:
        now = time.time()
        self._claims += 1
        if self._claims % SWEEP_EVERY == 1:
            self._run(f"DELETE FROM {self.table} WHERE expires <= %s", (now,))
        inserted = self._run(
            f"INSERT INTO {self.table} VALUES (%s, %s) ON CONFLICT (nonce) DO UPDATE SET "
            f"expires = EXCLUDED.expires WHERE {self.table}.expires <= %s", (nonce, now + ttl,
                                                                            now))
        return inserted == 1

    def forget(self, nonce: str) -> None:
        self._run(f"DELETE FROM {self.table} WHERE nonce = %s", (nonce,))


def guard_for(url: str, options: Mapping[str, Any] | None = None) -> Any:
    """The replay guard living with the broker of ``url``."""
    scheme = url.split("://", 1)[0].lower()
    options = dict(options or {})
    if scheme == "memory":
        return MemoryGuard()
    if scheme.startswith("sqlite"):
        return SQLiteGuard(url)
    if scheme in ("redis", "rediss", "sentinel", "redis+socket"):
        return RedisGuard(url, options)
    if "postgres" in scheme:
        return PostgresGuard(url, options)
    raise ImproperlyConfigured(f"security_replay_window: no replay guard for broker "
                               f"{scheme}:// (set security_replay_window = 0 to go without "
                               f"replay protection)")
