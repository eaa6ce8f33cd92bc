"""The SQLite broker's broadcast channel: fan-out and reply mailboxes in the broker's file.

Tables (created on first use, in the broker's database):

``broadcasts`` (id, exchange, routing_key, envelope, created_at)
    every fan-out message, kept :data:`KEEP_SECONDS` (pruned by publishers).
    A subscription remembers the highest id when it opened and reads newer
    rows of its exchange, filtering routing keys by AMQP topic rules.
``mailbox_bindings`` (box, exchange, routing_key, opened_at)
    open reply mailboxes; ``mailbox_messages`` (id, box, envelope) their
    messages, taken with ``DELETE ... RETURNING``. Closing a mailbox deletes
    both; bindings older than :data:`MAILBOX_MAX_AGE` (a client that died)
    are removed when another mailbox opens.

Waiting readers check ``PRAGMA data_version`` every :data:`POLL` seconds (a
remote-control or event round trip is not latency-critical, and a worker's
mailbox waits all the time) and query only when another connection committed.
Envelopes are kombu's JSON (:mod:`celeriac.brokers.fanout`).
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Sequence

from .. import fanout
from ..base import Broadcast, BroadcastChannel, Subscription, topic_matches
from .db import Connections, data_version

KEEP_SECONDS = 60.0
MAILBOX_MAX_AGE = 3600.0
POLL = 0.02
PRUNE_EVERY = 5.0


def _wait(conn: sqlite3.Connection, version: int, deadline: float) -> bool:
    """Sleep until another connection commits (True) or ``deadline`` (False)."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(POLL, left))
        if data_version(conn) != version:
            return True

SCHEMA = """
CREATE TABLE IF NOT EXISTS broadcasts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, exchange TEXT NOT NULL,
    routing_key TEXT NOT NULL, envelope TEXT NOT NULL, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS broadcasts_exchange ON broadcasts(exchange, id);
CREATE TABLE IF NOT EXISTS mailbox_bindings (
    box TEXT PRIMARY KEY, exchange TEXT NOT NULL, routing_key TEXT NOT NULL,
    opened_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS mailbox_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, box TEXT NOT NULL, envelope TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS mailbox_messages_box ON mailbox_messages(box, id)
"""


class _Subscription(Subscription):
    def __init__(self, channel: SQLiteBroadcast, exchange: str, patterns: Sequence[str]) -> None:
        self.channel, self.exchange = channel, exchange
        self.patterns = list(patterns) or [""]
        conn = channel.db.get()
        self.cursor = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM broadcasts")
                          .fetchone()[0])
        self.closed = False

    def _read(self) -> list[Broadcast]:
        rows = self.channel.db.get().execute(
            "SELECT id, routing_key, envelope FROM broadcasts WHERE exchange = ? AND id > ?"
            " ORDER BY id", (self.exchange, self.cursor)).fetchall()
        out = []
        for row_id, key, envelope in rows:
            self.cursor = max(self.cursor, row_id)
            if any(topic_matches(p, key) for p in self.patterns):
                out.append(fanout.loads(envelope, self.exchange, key))
        return out

    def get(self, timeout: float = 1.0) -> list[Broadcast]:
        deadline = time.monotonic() + max(0.0, timeout)
        conn = self.channel.db.get()
        while not self.closed:
            version = data_version(conn)
            got = self._read()
            if got:
                return got
            if not _wait(conn, version, deadline):
                return []
        return []

    def close(self) -> None:
        self.closed = True


class _Mailbox(Subscription):
    def __init__(self, channel: SQLiteBroadcast, exchange: str, routing_key: str) -> None:
        self.channel = channel
        self.box = f"{routing_key}.{exchange}.{uuid.uuid4().hex[:8]}"
        now = time.time()
        with channel.db.tx(durable=False) as conn:
            stale = [b for (b,) in conn.execute(
                "SELECT box FROM mailbox_bindings WHERE opened_at < ?",
                (now - MAILBOX_MAX_AGE,)).fetchall()]
            for box in stale:
                conn.execute("DELETE FROM mailbox_messages WHERE box = ?", (box,))
                conn.execute("DELETE FROM mailbox_bindings WHERE box = ?", (box,))
            conn.execute("INSERT INTO mailbox_bindings (box, exchange, routing_key, opened_at)"
                         " VALUES (?, ?, ?, ?)", (self.box, exchange, routing_key, now))

    def get(self, timeout: float = 1.0) -> list[Broadcast]:
        deadline = time.monotonic() + max(0.0, timeout)
        conn = self.channel.db.get()
        while True:
            version = data_version(conn)
            if conn.execute("SELECT EXISTS (SELECT 1 FROM mailbox_messages WHERE box = ?)",
                            (self.box,)).fetchone()[0]:
                with self.channel.db.tx(durable=False) as tx:
                    rows = tx.execute("DELETE FROM mailbox_messages WHERE box = ?"
                                      " RETURNING id, envelope", (self.box,)).fetchall()
                return [fanout.loads(env) for _, env in sorted(rows)]
            if not _wait(conn, version, deadline):
                return []

    def close(self) -> None:
        with self.channel.db.tx(durable=False) as conn:
            conn.execute("DELETE FROM mailbox_messages WHERE box = ?", (self.box,))
            conn.execute("DELETE FROM mailbox_bindings WHERE box = ?", (self.box,))


class SQLiteBroadcast(BroadcastChannel):
    """Fan-out between the processes that share one SQLite broker file."""

    def __init__(self, path: str) -> None:
        self.db = Connections(path, durability="fast", schema=SCHEMA)
        self._pruned = 0.0

    def publish(self, message: Broadcast) -> None:
        now = time.time()
        with self.db.tx(durable=False) as conn:
            conn.execute("INSERT INTO broadcasts (exchange, routing_key, envelope, created_at)"
                         " VALUES (?, ?, ?, ?)", (message.exchange, message.routing_key,
                                                  fanout.dumps(message), now))
            if now - self._pruned >= PRUNE_EVERY:  # ids grow with time: cut by id
                self._pruned = now
                conn.execute("DELETE FROM broadcasts WHERE id <= (SELECT MAX(id) FROM"
                             " broadcasts WHERE created_at < ?)", (now - KEEP_SECONDS,))

    def subscribe(self, exchange: str, patterns: Sequence[str] = ("#",)) -> Subscription:
        return _Subscription(self, exchange, patterns)

    def open_mailbox(self, exchange: str, routing_key: str) -> Subscription:
        return _Mailbox(self, exchange, routing_key)

    def send_to_mailbox(self, message: Broadcast) -> bool:
        text = fanout.dumps(message)
        with self.db.tx(durable=False) as conn:
            boxes = [b for (b,) in conn.execute(
                "SELECT box FROM mailbox_bindings WHERE exchange = ? AND routing_key = ?",
                (message.exchange, message.routing_key)).fetchall()]
            conn.executemany("INSERT INTO mailbox_messages (box, envelope) VALUES (?, ?)",
                             [(box, text) for box in boxes])
        return bool(boxes)

    def close(self) -> None:
        self.db.close()
