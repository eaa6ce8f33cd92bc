"""The PostgreSQL broker's broadcast channel: LISTEN/NOTIFY, no tables.

Fan-out: ``publish`` is ``pg_notify(<channel of the exchange>, payload)``; each
subscription holds its own connection that ``LISTEN``s to that channel and
filters routing keys by AMQP topic rules. The payload is kombu's JSON envelope
(:mod:`celeriac.brokers.fanout`); one over :data:`CHUNK` bytes (a long
traceback) is sent as numbered parts in one transaction, which PostgreSQL
delivers together and in order, and joined again by the reader.

Mailboxes (pidbox replies): the mailbox's connection ``LISTEN``s to a channel
named after the exchange and routing key, and holds a session advisory lock on
the same key while open (released before its connection closes, so a mailbox is
gone once ``close`` returns); ``send_to_mailbox`` notifies that channel and returns
False when no session of this database holds the lock (nobody listens).
Notifications wait in the listening connection until read, and go with it when
it closes.

Channel names are ``celeriac_bc_<hash>`` / ``celeriac_mb_<hash>`` of the schema,
exchange (and routing key), so apps in separate schemas of one database do not
hear each other. Delivery is transient, as the contract asks: only sessions
listening at commit time get a notification.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from ...exceptions import DecodeError, OperationalError
from .. import fanout
from ..base import Broadcast, BroadcastChannel, Subscription, topic_matches

#: largest payload part (NOTIFY allows 8000 bytes)
CHUNK = 7000


def _digest(*parts: str) -> str:
    return hashlib.sha1("\x00".join(parts).encode()).hexdigest()[:20]


def _lock_key(*parts: str) -> int:
    return int.from_bytes(hashlib.sha1("\x00".join(parts).encode()).digest()[:8], "big",
                          signed=True)


def _parts(message: Broadcast) -> list[str]:
    text = fanout.dumps(message)
    if len(text.encode()) <= CHUNK:
        return [text]
    data = text.encode()
    pieces = [data[i:i + CHUNK // 2] for i in range(0, len(data), CHUNK // 2)]
    ident = uuid.uuid4().hex
    return [json.dumps({"celeriac_part": [ident, n, len(pieces)],
                        "data": piece.hex()}) for n, piece in enumerate(pieces)]


class _Listening(Subscription):
    """One connection LISTENing to one channel."""

    def __init__(self, owner: PostgresBroadcast, channel: str, exchange: str,
                 patterns: Sequence[str] | None, routing_key: str = "",
                 lock: int | None = None) -> None:
        self.owner, self.channel, self.exchange = owner, channel, exchange
        self.patterns, self.routing_key = patterns, routing_key
        self._parts: dict[str, list[bytes | None]] = {}
        self.lock = lock
        try:
            self.conn = psycopg.connect(owner.conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise OperationalError(f"postgres {owner.safe_url}: {exc}") from exc
        try:
            if lock is not None:
                self.conn.execute("SELECT pg_advisory_lock(%s)", (lock,))
            self.conn.execute(f'LISTEN "{channel}"')
        except psycopg.Error as exc:
            self.conn.close()  # not left open for the garbage collector
            raise OperationalError(f"postgres {owner.safe_url}: {exc}") from exc

    def get(self, timeout: float = 1.0) -> list[Broadcast]:
        out: list[Broadcast] = []
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            while True:
                left = 0.0 if out else max(0.0, deadline - time.monotonic())
                got = list(self.conn.notifies(timeout=left or 0.001, stop_after=100))
                for note in got:
                    message = self._decode(note.payload)
                    if message is not None:
                        out.append(message)
                if out or time.monotonic() >= deadline:
                    return out
        except psycopg.Error as exc:
            raise OperationalError(f"postgres {self.owner.safe_url}: {exc}") from exc

    def _decode(self, payload: str) -> Broadcast | None:
        if payload.startswith('{"celeriac_part"'):
            head = json.loads(payload)
            ident, index, count = head["celeriac_part"]
            parts = self._parts.setdefault(ident, [None] * int(count))
            parts[int(index)] = bytes.fromhex(head["data"])
            if any(p is None for p in parts):
                return None
            payload = b"".join(p for p in parts if p is not None).decode()
            del self._parts[ident]
        try:
            message = fanout.loads(payload, self.exchange, self.routing_key)
        except DecodeError:
            return None
        if self.patterns is not None and not any(
                topic_matches(p, message.routing_key) for p in self.patterns):
            return None
        return message

    def close(self) -> None:
        """Release the mailbox's lock before closing: the server ends a closed session
        (and drops its locks) a moment after the client hangs up, and a sender checking
        in that moment would still see the mailbox open."""
        try:
            if self.lock is not None and not self.conn.closed:
                self.conn.execute("SELECT pg_advisory_unlock_all()")
        except psycopg.Error:
            pass
        try:
            self.conn.close()  # ends LISTEN (and the lock, if the unlock failed)
        except psycopg.Error:
            pass


class PostgresBroadcast(BroadcastChannel):
    """Fan-out and reply mailboxes over NOTIFY in one database schema."""

    def __init__(self, conninfo: str, safe_url: str, schema: str,
                 database: Callable[[], Any]) -> None:
        self.conninfo, self.safe_url, self.schema = conninfo, safe_url, schema
        self.database = database  # the broker's pool of this process, for NOTIFY

    def fanout_channel(self, exchange: str) -> str:
        return f"celeriac_bc_{_digest(self.schema, exchange)}"

    def mailbox_channel(self, exchange: str, routing_key: str) -> str:
        return f"celeriac_mb_{_digest(self.schema, exchange, routing_key)}"

    def _notify(self, channel: str, parts: list[str], lock: int | None = None) -> bool:
        def work(conn: psycopg.Connection[Any]) -> bool:
            with conn.transaction():
                if lock is not None:
                    high, low = (lock >> 32) & 0xFFFFFFFF, lock & 0xFFFFFFFF
                    held = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE"
                                        " locktype = 'advisory' AND granted AND objsubid = 1"
                                        " AND database = (SELECT oid FROM pg_database"
                                        " WHERE datname = current_database())"
                                        " AND classid::text::bigint = %s"
                                        " AND objid::text::bigint = %s)",
                                        (high, low)).fetchone()
                    if not (held and held[0]):
                        return False
                for part in parts:
                    conn.execute("SELECT pg_notify(%s, %s)", (channel, part))
            return True

        try:
            with self.database().connection() as conn:
                return bool(work(conn))
        except psycopg.Error as exc:
            raise OperationalError(f"postgres {self.safe_url}: {exc}") from exc

    def publish(self, message: Broadcast) -> None:
        self._notify(self.fanout_channel(message.exchange), _parts(message))

    def subscribe(self, exchange: str, patterns: Sequence[str] = ("#",)) -> Subscription:
        return _Listening(self, self.fanout_channel(exchange), exchange, list(patterns) or [""])

    def open_mailbox(self, exchange: str, routing_key: str) -> Subscription:
        return _Listening(self, self.mailbox_channel(exchange, routing_key), exchange, None,
                          routing_key, lock=_lock_key(self.schema, exchange, routing_key))

    def send_to_mailbox(self, message: Broadcast) -> bool:
        key = _lock_key(self.schema, message.exchange, message.routing_key)
        return self._notify(self.mailbox_channel(message.exchange, message.routing_key),
                            _parts(message), lock=key)
