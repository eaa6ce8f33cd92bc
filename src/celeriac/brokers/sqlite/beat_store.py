"""The SQLite schedule store: the default, sharing the broker's SQLite file when there is one.

Schema (tables prefixed ``beat_`` so they live beside the broker's)::

    beat_entries(name TEXT PRIMARY KEY,
                 definition TEXT,          -- EntrySpec.definition() as JSON
                 enabled INTEGER, version INTEGER,
                 anchor_us INTEGER,        -- grid anchor / not-before, UTC microseconds
                 last_run_us INTEGER,      -- last scheduled fire claimed (run state)
                 dropped_us INTEGER,       -- fires at or before this were dropped (run state)
                 total_run_count INTEGER, source TEXT, code_hash TEXT)
    beat_fires(entry TEXT, fire_us INTEGER, task_id TEXT, payload TEXT, owner TEXT,
               claimed_us INTEGER, state TEXT, sent_us INTEGER, manual INTEGER,
               PRIMARY KEY (entry, fire_us))        -- the unique key per fire time
    beat_meta(key TEXT PRIMARY KEY, value TEXT, expires_us INTEGER)
        -- 'generation' (value = counter), 'lease' (value = owner, expires_us)

Every write is one ``BEGIN IMMEDIATE`` transaction, so a claim checks the
entry, inserts the fire row and advances the cursor atomically.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ...schedules.entries import StoredEntry
from ...schedules.store import (
    SENT,
    FireRecord,
    ScheduleStore,
    entry_from_row,
    fire_from_row,
    to_us,
)
from .db import Connections, parse_url, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS beat_entries (
    name TEXT PRIMARY KEY, definition TEXT NOT NULL, enabled INTEGER NOT NULL,
    version INTEGER NOT NULL, anchor_us INTEGER NOT NULL, last_run_us INTEGER,
    dropped_us INTEGER, total_run_count INTEGER NOT NULL DEFAULT 0,
    source TEXT NOT NULL, code_hash TEXT);
CREATE TABLE IF NOT EXISTS beat_fires (
    entry TEXT NOT NULL, fire_us INTEGER NOT NULL, task_id TEXT NOT NULL,
    payload TEXT NOT NULL, owner TEXT NOT NULL, claimed_us INTEGER NOT NULL,
    state TEXT NOT NULL, sent_us INTEGER, manual INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (entry, fire_us));
CREATE INDEX IF NOT EXISTS beat_fires_claimed ON beat_fires(state, claimed_us);
CREATE TABLE IF NOT EXISTS beat_meta (key TEXT PRIMARY KEY, value TEXT, expires_us INTEGER);
"""

_ENTRY_COLUMNS = ("name, definition, enabled, version, anchor_us, last_run_us, dropped_us, "
                  "total_run_count, source, code_hash")
_FIRE_COLUMNS = "entry, fire_us, task_id, payload, owner, claimed_us, state, sent_us, manual"
_CURSOR = "MAX(anchor_us, COALESCE(last_run_us, anchor_us), COALESCE(dropped_us, anchor_us))"


class SQLiteStore(ScheduleStore):
    """Schedule store in a SQLite file (``sqlite:///path``, as the broker URL)."""

    def __init__(self, url: str = "sqlite://", *, app: Any = None) -> None:
        self.url = url
        self.path, query = parse_url(url)
        self._app = app
        self._conns = Connections(self.path, durability=query.get("durability", "durable"),
                                  schema=SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        return self._conns.get()

    def _tx(self) -> Any:
        return transaction(self._conn(), self.path)

    # -- rows ------------------------------------------------------------------
    def _entry(self, row: tuple[Any, ...]) -> StoredEntry:
        return entry_from_row(row, self._app)


    # -- entries ---------------------------------------------------------------
    def list_entries(self) -> list[StoredEntry]:
        rows = self._conn().execute(
            f"SELECT {_ENTRY_COLUMNS} FROM beat_entries ORDER BY name").fetchall()
        return [self._entry(r) for r in rows]

    def get_entry(self, name: str) -> StoredEntry | None:
        row = self._conn().execute(
            f"SELECT {_ENTRY_COLUMNS} FROM beat_entries WHERE name = ?", (name,)).fetchone()
        return self._entry(row) if row else None

    def generation(self) -> int:
        row = self._conn().execute(
            "SELECT value FROM beat_meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _bump(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO beat_meta (key, value) VALUES ('generation', '1') "
                     "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1")

    def put_entry(self, entry: StoredEntry, expected_version: int | None) -> bool:
        definition = json.dumps(entry.spec.definition(), sort_keys=True)
        values = (definition, int(entry.enabled), entry.version, to_us(entry.anchor),
                  entry.source, entry.code_hash)
        with self._tx() as conn:
            if expected_version is None:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO beat_entries (name, definition, enabled, version, "
                    "anchor_us, source, code_hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (entry.name, *values))
            else:
                cur = conn.execute(
                    "UPDATE beat_entries SET definition = ?, enabled = ?, version = ?, "
                    "anchor_us = ?, source = ?, code_hash = ? WHERE name = ? AND version = ?",
                    (*values, entry.name, expected_version))
            if cur.rowcount != 1:
                return False
            self._bump(conn)
            return True

    def delete_entry(self, name: str) -> bool:
        with self._tx() as conn:
            if conn.execute("DELETE FROM beat_entries WHERE name = ?", (name,)).rowcount != 1:
                return False
            self._bump(conn)
            return True

    # -- fires -----------------------------------------------------------------
    def claim_fire(self, record: FireRecord, version: int) -> bool:
        fire_us = to_us(record.fire_time)
        with self._tx() as conn:
            if record.manual:
                ok = conn.execute("SELECT 1 FROM beat_entries WHERE name = ?",
                                  (record.entry,)).fetchone()
            else:
                ok = conn.execute(
                    f"SELECT 1 FROM beat_entries WHERE name = ? AND enabled = 1 AND version = ? "
                    f"AND {_CURSOR} < ?", (record.entry, version, fire_us)).fetchone()
            if not ok:
                return False
            inserted = conn.execute(
                f"INSERT OR IGNORE INTO beat_fires ({_FIRE_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                (record.entry, fire_us, record.task_id, json.dumps(record.payload),
                 record.owner, to_us(record.claimed_at), record.state, int(record.manual)))
            if inserted.rowcount != 1:
                return False
            if record.manual:
                conn.execute("UPDATE beat_entries SET total_run_count = total_run_count + 1 "
                             "WHERE name = ?", (record.entry,))
            else:
                conn.execute("UPDATE beat_entries SET total_run_count = total_run_count + 1, "
                             "last_run_us = ? WHERE name = ?", (fire_us, record.entry))
            return True

    def drop_through(self, name: str, version: int, instant: datetime) -> bool:
        with self._tx() as conn:
            cur = conn.execute(
                f"UPDATE beat_entries SET dropped_us = ? WHERE name = ? AND version = ? "
                f"AND {_CURSOR} < ?", (to_us(instant), name, version, to_us(instant)))
            return cur.rowcount == 1

    def mark_sent(self, entry: str, fire_time: datetime, sent_at: datetime) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE beat_fires SET state = ?, sent_us = ? "
                         "WHERE entry = ? AND fire_us = ?",
                         (SENT, to_us(sent_at), entry, to_us(fire_time)))

    def stale_claims(self, claimed_before: datetime) -> list[FireRecord]:
        rows = self._conn().execute(
            f"SELECT {_FIRE_COLUMNS} FROM beat_fires WHERE state = 'claimed' "
            "AND claimed_us < ? ORDER BY fire_us", (to_us(claimed_before),)).fetchall()
        return [fire_from_row(r) for r in rows]

    def take_over(self, record: FireRecord, owner: str, now: datetime,
                  claimed_before: datetime) -> bool:
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE beat_fires SET owner = ?, claimed_us = ? WHERE entry = ? AND fire_us = ? "
                "AND state = 'claimed' AND claimed_us = ? AND claimed_us < ?",
                (owner, to_us(now), record.entry, to_us(record.fire_time),
                 to_us(record.claimed_at), to_us(claimed_before)))
            return cur.rowcount == 1

    def list_fires(self, entry: str | None = None) -> list[FireRecord]:
        sql = f"SELECT {_FIRE_COLUMNS} FROM beat_fires"
        args: tuple[Any, ...] = ()
        if entry is not None:
            sql, args = sql + " WHERE entry = ?", (entry,)
        rows = self._conn().execute(sql + " ORDER BY fire_us, entry", args).fetchall()
        return [fire_from_row(r) for r in rows]

    def prune_fires(self, before: datetime) -> int:
        with self._tx() as conn:
            return int(conn.execute("DELETE FROM beat_fires WHERE state = ? AND fire_us < ?",
                                    (SENT, to_us(before))).rowcount)

    # -- lease -------------------------------------------------------------------
    def acquire_lease(self, owner: str, now: datetime, ttl: float) -> bool:
        now_us = to_us(now)
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO beat_meta (key, value, expires_us) VALUES ('lease', ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
                "expires_us = excluded.expires_us WHERE beat_meta.value = excluded.value "
                "OR beat_meta.expires_us <= ?",
                (owner, now_us + int(ttl * 1_000_000), now_us))
            return cur.rowcount == 1

    def release_lease(self, owner: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM beat_meta WHERE key = 'lease' AND value = ?", (owner,))

    def lease_holder(self, now: datetime) -> str | None:
        row = self._conn().execute(
            "SELECT value FROM beat_meta WHERE key = 'lease' AND expires_us > ?",
            (to_us(now),)).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        self._conns.close()


def store_for_url(url: str, *, app: Any = None, options: Mapping[str, Any] | None = None,
                  prefix: str = "") -> SQLiteStore:
    """The store in the SQLite file of ``url`` (``sqlite://``, ``db+sqlite://``...)."""
    return SQLiteStore("sqlite://" + url.split("://", 1)[1], app=app)
