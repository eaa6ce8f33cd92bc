"""The PostgreSQL broker (``postgresql://``, ``postgres://``): a table leased with SKIP LOCKED.

Capabilities: native delay yes (``not_before``), priorities yes (0-9, 0 first),
lease renewal yes, push wake-up yes (LISTEN/NOTIFY), multi-host yes.

Schema and statements: ``migrations/0001_initial.sql`` and ``queries.sql`` beside
this module (every statement is named and described at the top of that file);
``docs/postgres.md`` explains them. In short, a message is one row of
``<schema>.messages``; it is *ready* when ``lease_token`` and ``not_before`` are NULL,
and the partial index ``messages_ready (queue, priority, id)`` holds exactly the
ready rows in serving order, so a lease reads the first rows of that index and stops,
with or without planner statistics.

Receiving is one statement (``ack_and_lease``): delete the rows acknowledged since
the last call (fenced by their tokens), promote delayed rows that fell due, reclaim
lapsed leases (``lost_count + 1``: the holder is presumed dead), and lease up to
``limit`` ready rows ``FOR UPDATE SKIP LOCKED`` with a fresh random token. Promoted
and reclaimed rows are leased by the next statement, which runs at once. A worker
whose result store is this database and schema stores its results in the same round
trip and transaction (:mod:`.settling`).

Waiting: a process has one LISTEN connection (:mod:`.listener`); every publish,
release or retry NOTIFYs the queue's channel in the same transaction (so a
transactional enqueue wakes consumers only when it commits). A consumer that found
nothing computes the next delay end or lease expiry and sleeps until then, a NOTIFY
or ``polling_interval`` (10 s, a safety net); repeated ``receive`` calls with no
NOTIFY in between do not query the database at all.

Durability: publishes and dead-letter moves commit with the server's
``synchronous_commit`` (on by default); leases, acks, renewals and releases commit
asynchronously (``set_config('synchronous_commit', 'off', true)`` inside the
statement): losing one in a server crash only causes a redelivery, and WAL keeps
commits in order, so the next durable commit makes the earlier ones durable too.

Failures: ``receive`` swallows connection errors, backs off (up to 1 s) and
retries until its timeout, then returns ``[]``; other calls retry by
``retry_policy`` (Celery's ``task_publish_retry_policy``) through
:func:`celeriac.retry.call` and then raise
:class:`~celeriac.exceptions.OperationalError` naming the (password-masked) URL.
Inside a producer's publish (which owns the retry policy and the
``broker_publish_timeout`` deadline) a publish here is one attempt, and its wait
for a connection and its round trips end by the deadline, even against a server
that accepts connections and never answers (:mod:`.deadline`). A publish retried
after a lost reply may store the message twice (at-least-once, never lost).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...exceptions import OperationalError
from ...messages import Message, encode_envelope, parse_envelope
from ...retry import RetryPolicy
from ..base import (
    BroadcastChannel,
    Broker,
    Capabilities,
    DeadLetter,
    Delivery,
    Publish,
    QueueStats,
)
from ..buckets import bucket_take
from . import sql
from .broadcast import PostgresBroadcast
from .db import Database, Handle, parse_url
from .enqueue import publish_on, shares_database
from .settling import PostgresSettling, lease_params, leased
from .settling import tagged as _tagged
from .slots import PostgresSlots

_CHUNK = 5000
#: how ``receive`` waits between attempts while the server is unreachable (back within ~1 s)
RECEIVE_BACKOFF = RetryPolicy(max_retries=None, interval_start=0.05, interval_step=0.2,
                              interval_max=1.0)


@dataclass
class _Idle:
    """What a thread's last empty receive saw, so the next one can skip the query."""

    seen: tuple[int, ...] = ()
    next_due: float | None = None
    checked_at: float = 0.0
    channels: list[str] = field(default_factory=list)


class PostgresBroker(PostgresSlots, PostgresSettling, Broker):
    """Messages in a PostgreSQL table, leased with ``FOR UPDATE SKIP LOCKED``."""

    schemes: ClassVar[tuple[str, ...]] = ("postgresql", "postgres")
    capabilities: ClassVar[Capabilities] = Capabilities(
        native_delay=True, priorities=True, lease_renewal=True, push_wakeup=True,
        multi_host=True,
    )

    def __init__(self, url: str, *, lease_seconds: float = 30.0,
                 options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, lease_seconds=lease_seconds, options=options)
        self.settings = parse_url(url, self.options)
        self.schema = self.settings.schema
        self.retry_policy = RetryPolicy.from_celery(self.options.get("retry_policy"))
        self._handle = Handle(self.settings)
        self._declared: set[str] = set()
        self._subscribed: set[str] = set()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._broadcast: Any = None

    @property
    def db(self) -> Database:
        db = self._handle.db
        db.broker_attached = True
        return db

    def _run(self, name: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The named statement, retried by ``retry_policy`` on connection errors."""
        return self.db.execute(name, params, policy=self.retry_policy)

    # -- producing ----------------------------------------------------------------
    def _columns(self, items: Iterable[Publish]) -> dict[str, list[Any]]:
        now = self.now()
        cols: dict[str, list[Any]] = {k: [] for k in (
            "queues", "priorities", "not_befores", "envelopes", "task_ids", "task_names")}
        for item in items:
            prio = self.message_priority(item.message, item.priority)
            due = None if item.not_before is None or item.not_before <= now else item.not_before
            cols["queues"].append(item.queue)
            cols["priorities"].append(prio)
            cols["not_befores"].append(due)
            cols["envelopes"].append(encode_envelope(item.message, item.queue, prio))
            cols["task_ids"].append(item.message.task_id)
            cols["task_names"].append(item.message.task_name)
        cols["channels"] = list(dict.fromkeys(cols["queues"]))
        return cols

    def publish(self, message: Message, queue: str, *, not_before: float | None = None,
                priority: int | None = None) -> None:
        if queue not in self._declared:
            self.publish_many([Publish(message, queue, not_before, priority)])
            return
        prio = self.message_priority(message, priority)
        due = None if not_before is None or not_before <= self.now() else not_before
        self._run("publish_one", {
            "queue": queue, "priority": prio, "not_before": due,
            "envelope": encode_envelope(message, queue, prio),
            "task_id": message.task_id, "task_name": message.task_name})

    def publish_many(self, items: Iterable[Publish]) -> None:
        batch = list(items)
        statements = self.db.sql
        for start in range(0, len(batch), _CHUNK):
            cols = self._columns(batch[start:start + _CHUNK])
            new = [q for q in cols["channels"] if q not in self._declared]

            def work(conn: Any, cols: dict[str, list[Any]] = cols, new: list[str] = new) -> None:
                with conn.transaction():
                    if new:
                        conn.execute(statements["declare_queues"], {"queues": new})
                    conn.execute(statements["publish"], cols)

            self.db.run(work, policy=self.retry_policy, what="publish")
            self._declared.update(new)

    def publish_in_transaction(self, connection: Any, items: Iterable[Publish]) -> None:
        """Insert ``items`` through the caller's open transaction on ``connection``
        (see :mod:`celeriac.brokers.postgres.enqueue`)."""
        publish_on(self, connection, list(items))

    def shares_database(self, settings: Mapping[str, Any]) -> bool:
        """True when a Django ``DATABASES`` entry names this broker's database (see
        :func:`celeriac.brokers.postgres.enqueue.shares_database`)."""
        return shares_database(self.settings.conninfo, settings)

    # -- consuming ------------------------------------------------------------------
    def _lease(self, acks: Sequence[Delivery], queues: list[str], owner: str,
               limit: int) -> tuple[int, list[Delivery], int]:
        rows = self.db.execute("ack_and_lease", lease_params(acks, queues, owner, limit,
                                                             self.lease_seconds))
        acked, got, changed = leased(rows, owner)
        if acked:
            self.db.maintenance.note(acked)
        return acked, got, changed

    def _channels(self, queues: list[str]) -> list[str]:
        channels = [sql.channel(self.schema, "q", q) for q in queues]
        with self._lock:
            new = [c for c in channels if c not in self._subscribed]
            self._subscribed.update(new)
        if new:  # waits for the LISTEN (short: while the server is down, it polls)
            self.db.listener.subscribe(new, timeout=2.0)
        return channels

    def _idle(self, queues: list[str]) -> _Idle:
        states: dict[tuple[str, ...], _Idle] | None = getattr(self._local, "idle", None)
        if states is None:
            states = self._local.idle = {}
        key = tuple(queues)
        if key not in states:
            states[key] = _Idle(channels=self._channels(queues))
        return states[key]

    def _forget_idle(self, queues: list[str]) -> None:
        """The next receive of ``queues`` on this thread queries (a lease ran elsewhere)."""
        idle = getattr(self._local, "idle", {}).get(tuple(queues))
        if idle is not None:
            idle.seen = ()

    def receive(self, queues: Sequence[str], *, owner: str, limit: int = 1,
                timeout: float = 1.0) -> list[Delivery]:
        return self.ack_and_receive((), queues, owner=owner, limit=limit, timeout=timeout)[1]

    def ack_and_receive(self, acks: Sequence[Delivery], queues: Sequence[str], *, owner: str,
                        limit: int = 1, timeout: float = 1.0) -> tuple[int, list[Delivery]]:
        """Acknowledge ``acks`` and lease up to ``limit`` messages in one statement; wait
        up to ``timeout`` for the first message (see the module docstring)."""
        names = list(dict.fromkeys(queues))
        if not names:
            return (self.ack(acks) if acks else 0), []
        deadline = time.monotonic() + max(0.0, timeout)
        idle = self._idle(names)
        listener = self.db.listener
        pending, acked, pauses = list(acks), 0, RECEIVE_BACKOFF.intervals()
        while True:
            seen = listener.version(idle.channels)
            healthy = listener.listening(idle.channels)
            wall, mono = self.now(), time.monotonic()
            must = (bool(pending) or not healthy or seen != idle.seen
                    or (idle.next_due is not None and wall >= idle.next_due)
                    or mono - idle.checked_at >= self.settings.polling_interval)
            if must:
                try:
                    done, got, changed = self._lease(pending, names, owner, max(1, limit))
                except OperationalError:
                    if pending:  # settle them by retry_policy (raises when that fails)
                        acked, pending = acked + self.ack(pending), []
                    pause = next(pauses)
                    if time.monotonic() + pause >= deadline:
                        return acked, []
                    time.sleep(pause)
                    continue
                acked, pending, pauses = acked + done, [], RECEIVE_BACKOFF.intervals()
                if got:
                    idle.seen = ()
                    return acked, got
                if changed:
                    continue
                idle.seen, idle.checked_at = seen, time.monotonic()
                idle.next_due = self._next_due(names)
            left = deadline - time.monotonic()
            if left <= 0:
                return acked, []
            nap = min(left, self.settings.polling_interval
                      - (time.monotonic() - idle.checked_at))
            if idle.next_due is not None:
                nap = min(nap, idle.next_due - self.now() + 0.001)
            if not healthy:
                nap = min(nap, 0.5)
            if nap > 0:
                listener.wait(idle.channels, seen, nap)

    def _next_due(self, queues: list[str]) -> float | None:
        try:
            [(due, db_now)] = self.db.execute("next_due", {"queues": queues})
        except OperationalError:
            return None
        if due is None:
            return None
        return float(due) - float(db_now) + self.now()  # in this host's clock

    def ack(self, deliveries: Sequence[Delivery]) -> int:
        ids, tokens, _ = _tagged(deliveries)
        if not ids:
            return 0
        [(count, _)] = self._run("ack", {"ids": ids, "tokens": tokens})
        self.db.maintenance.note(int(count))
        return int(count)

    def renew(self, deliveries: Sequence[Delivery], seconds: float | None = None) -> list[bool]:
        if not deliveries:
            return []
        ids, tokens, _ = _tagged(deliveries)
        rows = self._run("renew", {"ids": ids, "tokens": tokens,
                                   "seconds": self.lease_seconds if seconds is None
                                   else float(seconds)})
        held = {(str(row[0]), row[1]) for row in rows if row[0] is not None}
        return [(d.tag, d.token) in held for d in deliveries]

    def release(self, delivery: Delivery, *, not_before: float | None = None,
                failed: bool = False) -> bool:
        if not _tagged([delivery])[0]:
            return False
        due = None if not_before is None or not_before <= self.now() else not_before
        rows = self._run("release", {"id": int(delivery.tag), "token": delivery.token,
                                     "not_before": due, "failed": bool(failed)})
        return len(rows) == 1

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        if not _tagged([delivery])[0]:
            return False
        [(count,)] = self._run("dead_letter", {"id": int(delivery.tag),
                                               "token": delivery.token, "reason": reason})
        return count == 1

    def dead_letter_message(self, message: Message, queue: str, reason: str) -> str:
        prio = self.message_priority(message, None)
        [(dead_id,)] = self._run("dead_letter_message", {
            "queue": queue, "priority": prio, "reason": reason,
            "envelope": encode_envelope(message, queue, prio), "task_id": message.task_id,
            "task_name": message.task_name})
        return str(dead_id)

    def expire_owner(self, owner: str) -> int:
        [(count, _)] = self._run("expire_owner", {"owner": owner})
        return int(count)

    # -- admin ------------------------------------------------------------------------
    def purge(self, queue: str) -> int:
        [(count,)] = self._run("purge", {"queue": queue})
        return int(count)

    def stats(self, queue: str) -> QueueStats:
        [(ready, delayed, leased, dead, oldest)] = self._run("stats", {"queue": queue})
        return QueueStats(queue, ready=int(ready), delayed=int(delayed), leased=int(leased),
                          dead=int(dead), oldest_ready_at=oldest)

    def delayed(self, queue: str, limit: int = 1000) -> list[tuple[float, Message]]:
        rows = self._run("delayed", {"queue": queue, "limit": limit})
        return [(float(due), parse_envelope(env)) for due, env in rows]

    def broadcast_channel(self) -> BroadcastChannel:
        with self._lock:
            if self._broadcast is None:
                self._broadcast = PostgresBroadcast(self.settings.conninfo,
                                                    self.settings.safe_url, self.schema,
                                                    lambda: self.db)
            return self._broadcast

    def queues(self) -> list[str]:
        return [name for (name,) in self._run("queues", {})]

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        rows = self._run("dead_letters", {"queue": queue, "limit": limit})
        return [DeadLetter.from_row(r) for r in rows]

    def retry_dead_letter(self, dead_id: str) -> bool:
        try:
            key = int(dead_id)
        except ValueError:
            return False
        return len(self._run("retry_dead_letter", {"id": key})) == 1

    def purge_dead_letters(self, queue: str | None = None) -> int:
        [(count,)] = self._run("purge_dead_letters", {"queue": queue})
        return int(count)

    def take_token(self, key: str, rate: float, capacity: float = 1.0) -> float:
        bucket_take(1.0, 0.0, 0.0, rate, capacity)  # the same argument checks as elsewhere
        [(wait,)] = self._run("take_token", {"key": key, "rate": float(rate),
                                             "capacity": float(capacity)})
        return float(wait)

    def close(self) -> None:
        with self._lock:
            subscribed, self._subscribed = list(self._subscribed), set()
        db = self._handle._db
        if subscribed and db is not None and db._listener is not None:
            db._listener.unsubscribe(subscribed)
        self._local = threading.local()
        self._handle.close()
