"""Slots and unique claims of the SQLite broker (see :meth:`Broker.acquire_slot`).

Schema (:data:`SLOTS_SCHEMA`, in the broker's file beside ``messages``)::

    slots(name, message_id, token, task_id)      -- one row per holder
    unique_claims(key, value, expires)           -- one row per claimed key

A holder counts only while ``messages`` still has its row leased under its token
with an unexpired lease: :meth:`SQLiteSlots.acquire_slot` deletes the rows that
fail that test, counts the rest and inserts, all inside one ``BEGIN IMMEDIATE``
transaction (the write lock serialises every acquirer of the file), so an
acknowledged message or a lapsed lease (a killed worker) frees its place with
nothing to clean up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..base import Delivery
from ..slotting import SlotHolder

SLOTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS slots (
    name TEXT NOT NULL, message_id INTEGER NOT NULL, token TEXT NOT NULL, task_id TEXT,
    PRIMARY KEY (name, message_id));
CREATE TABLE IF NOT EXISTS unique_claims (
    key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL NOT NULL)
"""

_DEAD = """DELETE FROM slots WHERE {where} AND NOT EXISTS (
    SELECT 1 FROM messages m WHERE m.id = slots.message_id AND m.lease_token = slots.token
    AND m.lease_expires >= ?)"""
_LIVE = "SELECT lease_owner, lease_expires FROM messages WHERE id = ? AND lease_token = ?" \
        " AND lease_expires >= ?"


class SQLiteSlots:
    """Mixed into :class:`~celeriac.brokers.sqlite.broker.SQLiteBroker`."""

    now: Callable[[], float]

    _db: Any

    def acquire_slot(self, name: str, limit: int, delivery: Delivery) -> bool:
        tag, now = int(delivery.tag), self.now()
        with self._db.tx(durable=False) as conn:
            conn.execute(_DEAD.format(where="name = ?"), (name, now))
            row = conn.execute("SELECT token FROM slots WHERE name = ? AND message_id = ?",
                               (name, tag)).fetchone()
            if row is not None:
                return bool(row[0] == delivery.token)
            count = conn.execute("SELECT count(*) FROM slots WHERE name = ?",
                                 (name,)).fetchone()[0]
            if count >= limit or conn.execute(_LIVE, (tag, delivery.token, now)).fetchone() \
                    is None:
                return False
            conn.execute("INSERT INTO slots (name, message_id, token, task_id)"
                         " VALUES (?, ?, ?, ?)", (name, tag, delivery.token,
                                                  delivery.message.task_id))
            return True

    def release_slot(self, name: str, delivery: Delivery) -> bool:
        with self._db.tx(durable=False) as conn:
            return bool(conn.execute(
                "DELETE FROM slots WHERE name = ? AND message_id = ? AND token = ?",
                (name, int(delivery.tag), delivery.token)).rowcount == 1)

    def slot_holders(self, name: str | None = None) -> list[SlotHolder]:
        now = self.now()
        with self._db.tx(durable=False) as conn:
            if name is None:
                conn.execute(_DEAD.format(where="1"), (now,))
            else:
                conn.execute(_DEAD.format(where="name = ?"), (name, now))
            rows = conn.execute(
                "SELECT s.name, s.message_id, s.task_id, m.lease_owner, m.lease_expires"
                " FROM slots s JOIN messages m ON m.id = s.message_id"
                " WHERE (? IS NULL OR s.name = ?) ORDER BY s.name, s.message_id",
                (name, name)).fetchall()
        return [SlotHolder(r[0], str(r[1]), r[2], r[3], r[4]) for r in rows]

    def claim_unique(self, key: str, value: str, seconds: float) -> str | None:
        now = self.now()
        with self._db.tx(durable=False) as conn:
            row = conn.execute("SELECT value FROM unique_claims WHERE key = ? AND expires > ?",
                               (key, now)).fetchone()
            if row is not None:
                return str(row[0])
            conn.execute("DELETE FROM unique_claims WHERE expires <= ?", (now,))
            conn.execute("INSERT OR REPLACE INTO unique_claims (key, value, expires)"
                         " VALUES (?, ?, ?)", (key, value, now + float(seconds)))
            return None

    def release_unique(self, key: str, value: str) -> bool:
        with self._db.tx(durable=False) as conn:
            return bool(conn.execute(
                "DELETE FROM unique_claims WHERE key = ? AND value = ? AND expires > ?",
                (key, value, self.now())).rowcount == 1)
