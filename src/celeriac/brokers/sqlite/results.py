"""The SQLite result store (``sqlite:///path``, ``db+sqlite:///path``).

Same file conventions as :mod:`celeriac.brokers.sqlite.broker` (``sqlite://`` alone
means :func:`~celeriac.brokers.sqlite.db.default_path`, shared with the broker),
WAL, busy_timeout, one connection per thread, reopened after ``fork``.

Durability: commits use ``synchronous=NORMAL`` unless option
``durability="durable"`` asks for FULL. A worker stores a result before it acks
the task, and WAL keeps commits in order, so in the shared default file a power
failure that loses a result also loses the ack and the task runs again.

Schema::

    results(key TEXT PRIMARY KEY, value TEXT, expires_at REAL)  -- NULL: never expires
    chord_parts(group_id, idx, value, expires_at, PRIMARY KEY (group_id, idx))
    chords(group_id TEXT PRIMARY KEY, parts INTEGER, expires_at REAL)

Expired rows are invisible to reads and deleted by :meth:`cleanup`. A task
meta is written with one conditional upsert that skips a row whose live meta
is ``REVOKED`` (the REVOKED rule of :mod:`celeriac.results.store`). ``wait``
re-reads only when ``PRAGMA data_version`` says another connection committed.
The chord join inserts the part and bumps ``chords.parts`` in one ``BEGIN
IMMEDIATE`` transaction, so exactly one call sees the count reach ``size``.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from ... import states
from ...exceptions import OperationalError
from ...results.store import ResultStore, check_chord_args, decode_meta, encode_meta, expiry_time
from .db import Connections, data_version, parse_url, transaction, wait_for_change

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL);
CREATE INDEX IF NOT EXISTS results_expires ON results(expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS chord_parts (group_id TEXT NOT NULL, idx INTEGER NOT NULL,
    value TEXT NOT NULL, expires_at REAL, PRIMARY KEY (group_id, idx));
CREATE TABLE IF NOT EXISTS chords (group_id TEXT PRIMARY KEY, parts INTEGER NOT NULL,
    expires_at REAL);
"""

_LIVE = "(expires_at IS NULL OR expires_at > ?)"
#: insert or replace a task meta, unless (guarded) the stored one is a live REVOKED meta
_UPSERT_META = """INSERT INTO results (key, value, expires_at) VALUES (?1, ?2, ?3)
  ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
  WHERE NOT (?4 AND (results.expires_at IS NULL OR results.expires_at > ?5)
             AND CASE WHEN json_valid(results.value)
                      THEN json_extract(results.value, '$.status') END IS 'REVOKED')"""
UPSERT_META = _UPSERT_META
_CHUNK = 500


class SQLiteResultStore(ResultStore):
    """Results in a SQLite file, shared by every process on the host."""

    schemes: ClassVar[tuple[str, ...]] = ("sqlite", "db+sqlite")

    def __init__(self, url: str = "sqlite://", *, expires: float | None = 86400.0,
                 options: Mapping[str, Any] | None = None) -> None:
        path, query = parse_url(url)
        super().__init__(url, expires=expires, options={**query, **(options or {})})
        self.path = path
        self._db = Connections(path, durability=str(self.options.get("durability", "fast")),
                               schema=SCHEMA)
        #: commits with synchronous=FULL (durability "durable")
        self.durable = self._db.synchronous == "FULL"

    def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        try:
            return self._db.get().execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise OperationalError(f"sqlite {self.path}: {exc}") from exc

    def _get_raw(self, key: str) -> str | None:
        row = self._db.get().execute(f"SELECT value FROM results WHERE key = ? AND {_LIVE}",
                                     (key, time.time())).fetchone()
        return None if row is None else str(row[0])

    def _get_many_raw(self, keys: list[str]) -> list[str | bytes | None]:
        conn, now = self._db.get(), time.time()
        found: dict[str, str] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start:start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            found.update(conn.execute(
                f"SELECT key, value FROM results WHERE key IN ({marks}) AND {_LIVE}",
                (*chunk, now)).fetchall())
        return [found.get(k) for k in keys]

    def _set_raw(self, key: str, value: str, expires: float | None) -> None:
        self._write("INSERT OR REPLACE INTO results (key, value, expires_at) VALUES (?, ?, ?)",
                    (key, value, expiry_time(expires, time.time())))

    def _delete_raw(self, key: str) -> None:
        self._write("DELETE FROM results WHERE key = ?", (key,))

    def upsert_params(self, items: list[tuple[str, Mapping[str, Any]]],
                      expires: float | None) -> list[tuple[Any, ...]]:
        """The parameters of :data:`UPSERT_META` for ``set_many(items, expires=...)``, for
        the broker on the same file, which writes them in its own transaction."""
        now = time.time()
        at = expiry_time(self.expires if expires == -1 else expires, now)
        return [(self.task_key(tid), encode_meta(meta), at,
                 int(meta.get("status") != states.REVOKED), now) for tid, meta in items]

    def _write_metas(self, rows: list[tuple[str, str, bool]],
                     expires: float | None) -> list[bool]:
        """Upsert task metas, skipping those whose stored meta is a live REVOKED one; several
        rows share one transaction (one commit for a worker's batch)."""
        now = time.time()
        at = expiry_time(expires, now)
        params = [(key, value, at, int(guarded), now) for key, value, guarded in rows]
        if len(params) == 1:
            return [self._write(_UPSERT_META, params[0]) == 1]
        with transaction(self._db.get(), self.path) as conn:
            return [conn.execute(_UPSERT_META, p).rowcount == 1 for p in params]

    def wait(self, task_id: str, *, timeout: float | None = None,
             interval: float = 0.05) -> dict[str, Any] | None:
        """Wait until the task is ready, re-reading only after another connection commits."""
        conn, start = self._db.get(), time.monotonic()
        deadline = math.inf if timeout is None else start + timeout
        while True:
            version = data_version(conn)
            meta = self.get(task_id)
            if meta is not None and meta.get("status") in states.READY_STATES:
                return meta
            if not wait_for_change(conn, version, deadline, None, start):
                return self.get(task_id)

    # -- chord join -----------------------------------------------------------
    def chord_add(self, group_id: str, index: int, meta: Mapping[str, Any],
                  size: int) -> list[dict[str, Any]] | None:
        """Record member ``index``'s meta; return all ``size`` metas, in order, to the one
        call that completes the set (the first value recorded for an index wins)."""
        check_chord_args(index, size)
        expires_at = expiry_time(self.expires, time.time())
        with self._db.tx() as conn:
            added = conn.execute(
                "INSERT OR IGNORE INTO chord_parts (group_id, idx, value, expires_at)"
                " VALUES (?, ?, ?, ?)", (group_id, index, encode_meta(meta), expires_at))
            if added.rowcount != 1:
                return None
            (parts,) = conn.execute(
                "INSERT INTO chords (group_id, parts, expires_at) VALUES (?, 1, ?)"
                " ON CONFLICT (group_id) DO UPDATE SET parts = parts + 1 RETURNING parts",
                (group_id, expires_at)).fetchone()
            if parts != size:
                return None
            rows = conn.execute("SELECT value FROM chord_parts WHERE group_id = ?"
                                " ORDER BY idx", (group_id,)).fetchall()
        return [decode_meta(value) or {} for (value,) in rows]

    def chord_clear(self, group_id: str) -> None:
        """Forget the join state of ``group_id``."""
        with self._db.tx() as conn:
            conn.execute("DELETE FROM chord_parts WHERE group_id = ?", (group_id,))
            conn.execute("DELETE FROM chords WHERE group_id = ?", (group_id,))

    # -- housekeeping -----------------------------------------------------------
    def cleanup(self) -> int:
        now = time.time()
        with self._db.tx() as conn:
            return sum(conn.execute(f"DELETE FROM {table} WHERE expires_at <= ?",
                                    (now,)).rowcount
                       for table in ("results", "chord_parts", "chords"))

    def close(self) -> None:
        self._db.close()
