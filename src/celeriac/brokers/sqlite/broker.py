"""The embedded SQLite broker (``sqlite:///path``), safe for many processes on one host.

Capabilities: native delay yes, priorities yes (0 first), lease renewal yes,
push wake-up no (blocked ``receive`` calls poll ``PRAGMA data_version``, which
changes when another connection commits: every 2 ms, backing off to 5, 10 and
25 ms after 1, 10 and 60 quiet seconds), multi-host no.

Schema: :data:`SCHEMA` below (created on first use; the same file also holds
the SQLite result store's tables).

A message is ready when ``not_before`` is NULL (or has passed) and it has no
lease or its lease lapsed. Delayed rows stay out of the ready index, so a
large ETA backlog never slows ``receive``; ``receive`` first promotes due rows
(``not_before = NULL``), then leases in one ``UPDATE ... WHERE id IN (SELECT
... ORDER BY priority, id LIMIT ?) RETURNING`` inside ``BEGIN IMMEDIATE``.
Taking a row whose lease lapsed (token still set) counts one lost delivery.
Leases carry a random 128-bit token; ack/renew/release/dead-letter match it.
A write transaction of this process that held the lock for long (a task held
the GIL) renews this process's leases before it commits: no renewer could.

Durability: WAL with ``synchronous=FULL`` for publishes and dead-letter moves
(an acknowledged publish survives power loss); leases, acks, renewals and
releases commit with NORMAL, since losing one in a power failure can only cause
a redelivery. Option ``durability="fast"`` uses NORMAL throughout. One
connection per thread, reopened after ``fork``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from ...messages import Message, encode_envelope, parse_envelope
from ..base import (
    BroadcastChannel,
    Broker,
    Capabilities,
    DeadLetter,
    Delivery,
    Publish,
    QueueStats,
    envelope_bytes,
)
from ..buckets import bucket_take
from .broadcast import SQLiteBroadcast
from .db import (
    Connections,
    data_version,
    on_long_transaction,
    parse_url,
    wait_for_change,
)
from .settling import SQLiteSettling
from .slots import SLOTS_SCHEMA, SQLiteSlots

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,      -- publish order
    queue TEXT NOT NULL, priority INTEGER NOT NULL DEFAULT 0,  -- 0..9, 0 served first
    not_before REAL,                           -- NULL: due, else invisible until then
    envelope TEXT NOT NULL,                    -- kombu's JSON envelope
    lease_token TEXT, lease_owner TEXT, lease_expires REAL,  -- NULL: not leased
    delivery_count INTEGER NOT NULL DEFAULT 0, lost_count INTEGER NOT NULL DEFAULT 0,
    first_delivered_at REAL, published_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS messages_ready ON messages(queue, priority, id)
    WHERE not_before IS NULL;
CREATE INDEX IF NOT EXISTS messages_delayed ON messages(queue, not_before)
    WHERE not_before IS NOT NULL;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, priority INTEGER NOT NULL,
    reason TEXT NOT NULL, envelope TEXT NOT NULL, delivery_count INTEGER NOT NULL,
    lost_count INTEGER NOT NULL, first_delivered_at REAL, published_at REAL,
    dead_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS dead_letters_queue ON dead_letters(queue, id);
CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY);  -- every queue that held messages
CREATE TABLE IF NOT EXISTS rate_buckets (  -- take_token: one token bucket per key
    key TEXT PRIMARY KEY, tokens REAL NOT NULL, updated REAL NOT NULL)
"""

_READY = "not_before IS NULL AND (lease_expires IS NULL OR lease_expires < ?)"
_HELD = "id = ? AND lease_token = ?"
_INSERT = ("INSERT INTO messages (queue, priority, not_before, envelope, published_at)"
           " VALUES (?, ?, ?, ?, ?)")
_LEASE = """UPDATE messages SET lease_token = lower(hex(randomblob(16))),
    lease_owner = ?, lease_expires = ?, delivery_count = delivery_count + 1,
    lost_count = lost_count + (lease_token IS NOT NULL),
    first_delivered_at = COALESCE(first_delivered_at, ?)
  WHERE id IN ({select})
  RETURNING id, queue, priority, envelope, lease_token, delivery_count, lost_count,
    published_at"""


def _ready_select(count: int) -> str:
    one = f"SELECT id, priority FROM messages WHERE queue = ? AND {_READY}" \
          " ORDER BY priority, id LIMIT ?"
    if count == 1:
        return one.replace("SELECT id, priority", "SELECT id", 1)
    branches = " UNION ALL ".join(f"SELECT id, priority FROM ({one})" for _ in range(count))
    return f"SELECT id FROM ({branches} ORDER BY priority, id LIMIT ?)"


class SQLiteBroker(SQLiteSettling, SQLiteSlots, Broker):
    """Messages in one SQLite file shared by every process on the host."""

    schemes: ClassVar[tuple[str, ...]] = ("sqlite",)
    capabilities: ClassVar[Capabilities] = Capabilities(
        native_delay=True, priorities=True, lease_renewal=True, push_wakeup=False,
        multi_host=False,
    )

    def __init__(self, url: str = "sqlite://", *, lease_seconds: float = 30.0,
                 options: Mapping[str, Any] | None = None) -> None:
        path, query = parse_url(url)
        super().__init__(url, lease_seconds=lease_seconds, options={**query, **(options or {})})
        self.path = path
        self._db = Connections(path, durability=str(self.options.get("durability", "durable")),
                               schema=SCHEMA + ";" + SLOTS_SCHEMA)
        self._known_queues: set[str] = set()
        self._idle = threading.local()
        self._broadcast: SQLiteBroadcast | None = None
        self._owners: tuple[int, set[str]] = (os.getpid(), set())  # who leased, in which pid
        on_long_transaction(path, self._renew_own_leases)

    # -- producing ------------------------------------------------------------
    def _rows(self, items: Iterable[Publish]) -> list[tuple[Any, ...]]:
        now, rows = self.now(), []
        for item in items:
            prio = self.message_priority(item.message, item.priority)
            due = None if item.not_before is None or item.not_before <= now else item.not_before
            rows.append((item.queue, prio, due,
                         encode_envelope(item.message, item.queue, prio), now))
        return rows

    def publish(self, message: Message, queue: str, *, not_before: float | None = None,
                priority: int | None = None) -> None:
        self.publish_many([Publish(message, queue, not_before, priority)])

    def publish_many(self, items: Iterable[Publish]) -> None:
        rows = self._rows(items)
        new_queues = {row[0] for row in rows} - self._known_queues
        with self._db.tx() as conn:
            conn.executemany(_INSERT, rows)
            if new_queues:
                conn.executemany("INSERT OR IGNORE INTO queues (name) VALUES (?)",
                                 [(q,) for q in new_queues])
        self._known_queues |= new_queues

    # -- consuming --------------------------------------------------------------
    def _renew_own_leases(self, conn: sqlite3.Connection) -> None:
        """Inside a write transaction of this process that held the lock for long: every
        other writer, this process's lease renewer too, was locked out meanwhile."""
        pid, owners = self._owners
        if pid == os.getpid() and owners:
            marks = ", ".join("?" * len(owners))
            conn.execute("UPDATE messages SET lease_expires = MAX(lease_expires, ?) WHERE"
                         f" lease_owner IN ({marks}) AND lease_token IS NOT NULL",
                         (self.now() + self.lease_seconds, *sorted(owners)))

    def _lease(self, queues: list[str], owner: str, limit: int, acks: Sequence[Delivery] = (),
               before: Callable[[sqlite3.Connection], None] | None = None,
               durable: bool = False) -> tuple[int, list[Delivery]]:
        if self._owners[0] != os.getpid():
            self._owners = (os.getpid(), set())
        self._owners[1].add(owner)
        now = self.now()
        expires = now + self.lease_seconds
        marks = ", ".join("?" * len(queues))
        params: list[Any] = [owner, expires, now]
        for queue in queues:
            params += [queue, now, limit]
        if len(queues) > 1:
            params.append(limit)
        acked = 0
        with self._db.tx(durable=durable) as conn:
            if before is not None:  # batched results, written before their acks
                before(conn)
            if acks:
                acked = max(0, conn.executemany(f"DELETE FROM messages WHERE {_HELD}",
                                                [(int(d.tag), d.token) for d in acks]).rowcount)
            conn.execute(f"UPDATE messages SET not_before = NULL WHERE queue IN ({marks})"
                         " AND not_before <= ?", (*queues, now))
            rows = conn.execute(_LEASE.format(select=_ready_select(len(queues))),
                                params).fetchall()
        rows.sort(key=lambda r: (r[2], r[0]))
        return acked, [Delivery(message=parse_envelope(env), queue=queue, tag=str(mid), token=token,
                         owner=owner, redelivered=count > 1, delivery_count=count,
                         lost_count=lost, lease_expires=expires, published_at=published,
                         envelope_size=envelope_bytes(env))
                for mid, queue, _prio, env, token, count, lost, published in rows]

    def _any_ready(self, conn: sqlite3.Connection, queues: list[str]) -> bool:
        """A read-only check, so waiting consumers take the write lock only when useful."""
        marks, now = ", ".join("?" * len(queues)), self.now()
        return bool(conn.execute(
            f"SELECT EXISTS (SELECT 1 FROM messages WHERE queue IN ({marks}) AND {_READY})"
            f" OR EXISTS (SELECT 1 FROM messages WHERE queue IN ({marks}) AND not_before <= ?)",
            (*queues, now, *queues, now)).fetchone()[0])

    def _next_due(self, conn: sqlite3.Connection, queues: list[str]) -> float | None:
        """Earliest delay end or lease expiry that could make a message ready."""
        marks = ", ".join("?" * len(queues))
        delayed = conn.execute(f"SELECT MIN(not_before) FROM messages WHERE queue IN ({marks})"
                               " AND not_before IS NOT NULL", queues).fetchone()[0]
        leased = conn.execute(f"SELECT MIN(lease_expires) FROM messages WHERE queue IN"
                              f" ({marks}) AND not_before IS NULL", queues).fetchone()[0]
        dues = [t for t in (delayed, leased) if t is not None]
        return min(dues) if dues else None

    def receive(self, queues: Sequence[str], *, owner: str, limit: int = 1,
                timeout: float = 1.0) -> list[Delivery]:
        return self.ack_and_receive((), queues, owner=owner, limit=limit, timeout=timeout)[1]

    def ack_and_receive(self, acks: Sequence[Delivery], queues: Sequence[str], *, owner: str,
                        limit: int = 1, timeout: float = 1.0) -> tuple[int, list[Delivery]]:
        """Acknowledge ``acks`` inside the same transaction as the first lease attempt."""
        names = list(dict.fromkeys(queues))
        if not names:
            return (self.ack(acks) if acks else 0), []
        acked = 0
        deadline = time.monotonic() + max(0.0, timeout)
        conn = self._db.get()
        idle_since = getattr(self._idle, "since", time.monotonic())
        first = True
        while True:
            version = data_version(conn)
            if first or self._any_ready(conn, names):
                done, got = self._lease(names, owner, max(1, limit), acks if first else ())
                acked += done
                if got:
                    self._idle.since = time.monotonic()
                    return acked, got
            first = False
            due = self._next_due(conn, names)
            if not wait_for_change(conn, version, deadline, due, idle_since):
                self._idle.since = idle_since
                return acked, []

    def ack(self, deliveries: Sequence[Delivery]) -> int:
        if not deliveries:
            return 0
        with self._db.tx(durable=False) as conn:
            cur = conn.executemany(f"DELETE FROM messages WHERE {_HELD}",
                                   [(int(d.tag), d.token) for d in deliveries])
            return max(0, cur.rowcount)

    def renew(self, deliveries: Sequence[Delivery], seconds: float | None = None) -> list[bool]:
        if not deliveries:
            return []
        expires = self.now() + (self.lease_seconds if seconds is None else float(seconds))
        with self._db.tx(durable=False) as conn:
            return [conn.execute(f"UPDATE messages SET lease_expires = ? WHERE {_HELD}",
                                 (expires, int(d.tag), d.token)).rowcount == 1
                    for d in deliveries]

    def release(self, delivery: Delivery, *, not_before: float | None = None,
                failed: bool = False) -> bool:
        due = None if not_before is None or not_before <= self.now() else not_before
        with self._db.tx(durable=False) as conn:
            cur = conn.execute(
                "UPDATE messages SET lease_token = NULL, lease_owner = NULL,"
                f" lease_expires = NULL, not_before = ?, lost_count = lost_count + ?"
                f" WHERE {_HELD}", (due, int(failed), int(delivery.tag), delivery.token))
            return cur.rowcount == 1

    def dead_letter_message(self, message: Message, queue: str, reason: str) -> str:
        prio = self.message_priority(message, None)
        now = self.now()
        with self._db.tx() as conn:
            cur = conn.execute(
                "INSERT INTO dead_letters (queue, priority, reason, envelope, delivery_count,"
                " lost_count, first_delivered_at, published_at, dead_at)"
                " VALUES (?, ?, ?, ?, 0, 0, NULL, ?, ?)",
                (queue, prio, reason, encode_envelope(message, queue, prio), now, now))
            conn.execute("INSERT OR IGNORE INTO queues (name) VALUES (?)", (queue,))
            return str(cur.lastrowid)

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        key = (int(delivery.tag), delivery.token)
        with self._db.tx() as conn:
            cur = conn.execute(
                "INSERT INTO dead_letters (queue, priority, reason, envelope, delivery_count,"
                " lost_count, first_delivered_at, published_at, dead_at) SELECT queue,"
                " priority, ?, envelope, delivery_count, lost_count, first_delivered_at,"
                f" published_at, ? FROM messages WHERE {_HELD}", (reason, self.now(), *key))
            if cur.rowcount != 1:
                return False
            conn.execute(f"DELETE FROM messages WHERE {_HELD}", key)
            return True

    def expire_owner(self, owner: str) -> int:
        with self._db.tx(durable=False) as conn:
            return conn.execute(
                "UPDATE messages SET lease_expires = 0 WHERE lease_owner = ?"
                " AND lease_token IS NOT NULL AND lease_expires >= ?",
                (owner, self.now())).rowcount

    # -- admin ------------------------------------------------------------------
    def purge(self, queue: str) -> int:
        with self._db.tx() as conn:
            ready = conn.execute(f"DELETE FROM messages WHERE queue = ? AND {_READY}",
                                 (queue, self.now())).rowcount
            delayed = conn.execute("DELETE FROM messages WHERE queue = ?"
                                   " AND not_before IS NOT NULL", (queue,)).rowcount
        return ready + delayed

    def stats(self, queue: str) -> QueueStats:
        conn, now = self._db.get(), self.now()
        total, leased = conn.execute(
            "SELECT COUNT(*), TOTAL(lease_expires >= ?) FROM messages"
            " WHERE queue = ? AND not_before IS NULL", (now, queue)).fetchone()
        delayed, due = conn.execute(
            "SELECT TOTAL(not_before > ?), TOTAL(not_before <= ?) FROM messages"
            " WHERE queue = ? AND not_before IS NOT NULL", (now, now, queue)).fetchone()
        dead = conn.execute("SELECT COUNT(*) FROM dead_letters WHERE queue = ?",
                            (queue,)).fetchone()[0]
        oldest = conn.execute(
            "SELECT MIN(COALESCE(not_before, published_at)) FROM messages WHERE queue = ?"
            " AND (not_before IS NULL OR not_before <= ?)"
            " AND (lease_expires IS NULL OR lease_expires < ?)", (queue, now, now)).fetchone()[0]
        return QueueStats(queue, ready=int(total - leased + due), delayed=int(delayed),
                          leased=int(leased), dead=int(dead), oldest_ready_at=oldest)

    def delayed(self, queue: str, limit: int = 1000) -> list[tuple[float, Message]]:
        rows = self._db.get().execute(
            "SELECT not_before, envelope FROM messages WHERE queue = ? AND not_before > ?"
            " ORDER BY not_before, id LIMIT ?", (queue, self.now(), limit)).fetchall()
        return [(due, parse_envelope(env)) for due, env in rows]

    def broadcast_channel(self) -> BroadcastChannel:
        if self._broadcast is None:
            self._broadcast = SQLiteBroadcast(self.path)
        return self._broadcast

    def waiting(self, queue: str) -> list[Publish]:
        conn, now = self._db.get(), self.now()
        rows = conn.execute(
            "SELECT priority, not_before, envelope FROM messages WHERE queue = ?"
            " AND (lease_expires IS NULL OR lease_expires < ?)"
            " ORDER BY not_before IS NOT NULL AND not_before > ?,"
            " CASE WHEN not_before > ? THEN not_before ELSE 0 END, priority, id",
            (queue, now, now, now)).fetchall()
        return [Publish(parse_envelope(env), queue,
                        due if due is not None and due > now else None, prio)
                for prio, due, env in rows]

    def queues(self) -> list[str]:
        rows = self._db.get().execute("SELECT name FROM queues ORDER BY name").fetchall()
        return [name for (name,) in rows]

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        where = "" if queue is None else "WHERE queue = ?"
        rows = self._db.get().execute(
            "SELECT id, queue, reason, envelope, delivery_count, lost_count,"
            f" first_delivered_at, dead_at FROM dead_letters {where} ORDER BY id LIMIT ?",
            (() if queue is None else (queue,)) + (limit,)).fetchall()
        return [DeadLetter.from_row(r) for r in rows]

    def retry_dead_letter(self, dead_id: str) -> bool:
        try:
            key = int(dead_id)
        except ValueError:
            return False
        with self._db.tx() as conn:
            cur = conn.execute(
                "INSERT INTO messages (queue, priority, not_before, envelope, published_at)"
                " SELECT queue, priority, NULL, envelope, ? FROM dead_letters WHERE id = ?",
                (self.now(), key))
            if cur.rowcount != 1:
                return False
            conn.execute("DELETE FROM dead_letters WHERE id = ?", (key,))
            return True

    def purge_dead_letters(self, queue: str | None = None) -> int:
        with self._db.tx() as conn:
            if queue is None:
                return conn.execute("DELETE FROM dead_letters").rowcount
            return conn.execute("DELETE FROM dead_letters WHERE queue = ?", (queue,)).rowcount

    def take_token(self, key: str, rate: float, capacity: float = 1.0) -> float:
        with self._db.tx(durable=False) as conn:  # BEGIN IMMEDIATE: one writer at a time
            now = self.now()
            row = conn.execute("SELECT tokens, updated FROM rate_buckets WHERE key = ?",
                               (key,)).fetchone()
            tokens, updated = row if row is not None else (float(capacity), now)
            left, wait = bucket_take(tokens, updated, now, rate, capacity)
            conn.execute("INSERT INTO rate_buckets (key, tokens, updated) VALUES (?, ?, ?)"
                         " ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens,"
                         " updated = excluded.updated", (key, left, now))
            return wait

    def close(self) -> None:
        self._db.close()
        if self._broadcast is not None:
            self._broadcast.close()
