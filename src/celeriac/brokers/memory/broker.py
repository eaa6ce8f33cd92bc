"""The in-memory broker (``memory://``): one process, many threads.

Capabilities: native delay yes, priorities yes (0 first), lease renewal yes,
push wake-up yes (a Condition wakes blocked ``receive`` calls at once),
multi-host no.

All state lives in the instance, guarded by one lock; the app keeps one broker
per process and in-process worker threads share it. Messages are stored as
their JSON envelope text, exactly as the SQLite broker stores them, so a
delivered :class:`~celeriac.messages.Message` is a fresh copy that looks the
same on every broker.

Bookkeeping: ``_entries`` (id -> entry) is the truth; three heaps index it
lazily (stale heap items are recognised by the entry's ``version``):

* ``_ready[queue]``: ``(priority, id, version)``, served lowest first;
* ``_delayed``: ``(not_before, id, version)``;
* ``_leases``: ``(lease_expires, id, version)``; a lapsed lease moves its
  entry back to ready, keeping the token until someone else takes it.

Two clocks: delays (``not_before``) follow :mod:`celeriac.clock`, so a test's
controlled clock makes them due; leases measure liveness and follow the real
monotonic clock (``lease_expires`` in a :class:`Delivery` is still epoch time),
so moving a test's clock never takes a running task away from its worker.
Every move of the clock wakes blocked ``receive`` calls.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ... import clock
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
from .broadcast import MemoryBroadcast
from .slots import MemorySlots

READY, DELAYED, LEASED = "ready", "delayed", "leased"


@dataclass
class _Entry:
    id: int
    queue: str
    priority: int
    envelope: str
    state: str
    not_before: float = 0.0
    token: str | None = None
    owner: str | None = None
    lease_expires: float = 0.0
    delivery_count: int = 0
    lost_count: int = 0
    first_delivered_at: float | None = None
    version: int = 0
    #: when it last became ready (publish, end of its delay, lapse or release)
    ready_since: float = 0.0


class MemoryBroker(MemorySlots, Broker):
    """A thread-safe broker kept in this process's memory."""

    schemes: ClassVar[tuple[str, ...]] = ("memory",)
    capabilities: ClassVar[Capabilities] = Capabilities(
        native_delay=True, priorities=True, lease_renewal=True, push_wakeup=True,
        multi_host=False,
    )

    def __init__(self, url: str = "memory://", *, lease_seconds: float = 30.0,
                 options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, lease_seconds=lease_seconds, options=options)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._ids = itertools.count(1)
        self._entries: dict[int, _Entry] = {}
        self._ready: dict[str, list[tuple[int, int, int]]] = {}
        self._delayed: list[tuple[float, int, int]] = []
        self._leases: list[tuple[float, int, int]] = []
        self._dead: dict[str, DeadLetter] = {}
        self._queues: dict[str, None] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        self._broadcast: MemoryBroadcast | None = None
        clock.on_change(self._clock_moved)

    def _clock_moved(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # -- state transitions (lock held) -------------------------------------
    def _make_ready(self, entry: _Entry, since: float | None = None) -> None:
        entry.state, entry.version = READY, entry.version + 1
        entry.ready_since = self.now() if since is None else since
        heapq.heappush(self._ready.setdefault(entry.queue, []),
                       (entry.priority, entry.id, entry.version))

    def _make_delayed(self, entry: _Entry, not_before: float) -> None:
        entry.state, entry.version, entry.not_before = DELAYED, entry.version + 1, not_before
        heapq.heappush(self._delayed, (not_before, entry.id, entry.version))

    def _make_leased(self, entry: _Entry, token: str, owner: str, expires: float) -> None:
        entry.state, entry.version = LEASED, entry.version + 1
        entry.token, entry.owner, entry.lease_expires = token, owner, expires
        heapq.heappush(self._leases, (expires, entry.id, entry.version))

    def _current(self, item: tuple[Any, int, int]) -> _Entry | None:
        entry = self._entries.get(item[1])
        return entry if entry is not None and entry.version == item[2] else None

    def _promote(self, now: float) -> None:
        """Move due delayed messages and lapsed leases to ready."""
        while self._delayed and self._delayed[0][0] <= now:
            entry = self._current(heapq.heappop(self._delayed))
            if entry is not None:
                self._make_ready(entry, entry.not_before)
        alive = time.monotonic()
        while self._leases and self._leases[0][0] < alive:
            entry = self._current(heapq.heappop(self._leases))
            if entry is not None:
                # keeps token: the holder may still ack
                self._make_ready(entry, entry.lease_expires)

    def _held(self, delivery: Delivery) -> _Entry | None:
        """The entry if ``delivery``'s token still holds it."""
        entry = self._entries.get(int(delivery.tag))
        if entry is None or entry.token is None or entry.token != delivery.token:
            return None
        return entry

    def _next_wait(self, now: float) -> float | None:
        """Seconds until a delay ends or a lease lapses, or None if neither is pending."""
        waits = []
        if self._delayed:
            waits.append(self._delayed[0][0] - now)
        if self._leases:
            waits.append(self._leases[0][0] - time.monotonic())
        return max(0.0, min(waits)) if waits else None

    # -- producing ------------------------------------------------------------
    def _add(self, message: Message, queue: str, not_before: float | None,
             priority: int | None, now: float) -> None:
        prio = self.message_priority(message, priority)
        entry = _Entry(next(self._ids), queue, prio, encode_envelope(message, queue, prio), READY)
        self._entries[entry.id] = entry
        self._queues.setdefault(queue, None)
        if not_before is not None and not_before > now:
            self._make_delayed(entry, not_before)
        else:
            self._make_ready(entry)

    def publish(self, message: Message, queue: str, *, not_before: float | None = None,
                priority: int | None = None) -> None:
        with self._changed:
            self._add(message, queue, not_before, priority, self.now())
            self._changed.notify_all()

    def publish_many(self, items: Iterable[Publish]) -> None:
        batch = list(items)
        with self._changed:
            now = self.now()
            for item in batch:
                self._add(item.message, item.queue, item.not_before, item.priority, now)
            self._changed.notify_all()

    # -- consuming --------------------------------------------------------------
    def _pop_ready(self, queues: Sequence[str]) -> _Entry | None:
        best: tuple[int, int, int] | None = None
        best_heap: list[tuple[int, int, int]] | None = None
        for queue in queues:
            heap = self._ready.get(queue)
            while heap and self._current(heap[0]) is None:
                heapq.heappop(heap)
            if heap and (best is None or heap[0] < best):
                best, best_heap = heap[0], heap
        if best is None or best_heap is None:
            return None
        heapq.heappop(best_heap)
        return self._entries[best[1]]

    def _take(self, queues: Sequence[str], owner: str, limit: int) -> list[Delivery]:
        now = self.now()
        self._promote(now)
        expires = time.monotonic() + self.lease_seconds
        wall_expires = time.time() + self.lease_seconds
        out: list[Delivery] = []
        while len(out) < limit:
            entry = self._pop_ready(queues)
            if entry is None:
                break
            if entry.token is not None:  # its previous lease lapsed
                entry.lost_count += 1
            entry.delivery_count += 1
            if entry.first_delivered_at is None:
                entry.first_delivered_at = now
            token = uuid.uuid4().hex
            self._make_leased(entry, token, owner, expires)
            out.append(Delivery(
                message=parse_envelope(entry.envelope), queue=entry.queue, tag=str(entry.id),
                token=token, owner=owner, redelivered=entry.delivery_count > 1,
                delivery_count=entry.delivery_count, lost_count=entry.lost_count,
                lease_expires=wall_expires, published_at=entry.ready_since,
                envelope_size=envelope_bytes(entry.envelope),
            ))
        return out

    def receive(self, queues: Sequence[str], *, owner: str, limit: int = 1,
                timeout: float = 1.0) -> list[Delivery]:
        deadline = time.monotonic() + max(0.0, timeout)
        with self._changed:
            while True:
                got = self._take(queues, owner, max(1, limit))
                left = deadline - time.monotonic()
                if got or left <= 0:
                    return got
                event = self._next_wait(self.now())
                if event is not None:
                    left = min(left, event + 0.001)
                self._changed.wait(left)

    def ack(self, deliveries: Sequence[Delivery]) -> int:
        done = 0
        with self._lock:
            for delivery in deliveries:
                entry = self._held(delivery)
                if entry is not None:
                    del self._entries[entry.id]
                    done += 1
        return done

    def renew(self, deliveries: Sequence[Delivery], seconds: float | None = None) -> list[bool]:
        extend = self.lease_seconds if seconds is None else float(seconds)
        out: list[bool] = []
        with self._lock:
            expires = time.monotonic() + extend
            for delivery in deliveries:
                entry = self._held(delivery)
                if entry is not None:
                    self._make_leased(entry, delivery.token, delivery.owner, expires)
                out.append(entry is not None)
        return out

    def release(self, delivery: Delivery, *, not_before: float | None = None,
                failed: bool = False) -> bool:
        with self._changed:
            entry = self._held(delivery)
            if entry is None:
                return False
            entry.token = entry.owner = None
            entry.lost_count += int(failed)
            if not_before is not None and not_before > self.now():
                self._make_delayed(entry, not_before)
            else:
                self._make_ready(entry)
            self._changed.notify_all()
            return True

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        with self._lock:
            entry = self._held(delivery)
            if entry is None:
                return False
            del self._entries[entry.id]
            dead_id = str(entry.id)
            self._dead[dead_id] = DeadLetter(
                id=dead_id, queue=entry.queue, reason=reason,
                message=parse_envelope(entry.envelope), delivery_count=entry.delivery_count,
                lost_count=entry.lost_count, first_delivered_at=entry.first_delivered_at,
                dead_at=self.now(),
            )
            return True

    def dead_letter_message(self, message: Message, queue: str, reason: str) -> str:
        with self._lock:
            dead_id = f"m{next(self._ids)}"
            prio = self.message_priority(message, None)
            self._dead[dead_id] = DeadLetter(
                id=dead_id, queue=queue, reason=reason,
                message=parse_envelope(encode_envelope(message, queue, prio)),
                delivery_count=0, lost_count=0, first_delivered_at=None, dead_at=self.now())
            self._queues.setdefault(queue, None)
            return dead_id

    def expire_owner(self, owner: str) -> int:
        with self._changed:
            alive = time.monotonic()
            lapsed = 0
            for entry in self._entries.values():
                if entry.state == LEASED and entry.owner == owner and entry.lease_expires >= alive:
                    entry.lease_expires = 0.0
                    self._make_ready(entry)
                    lapsed += 1
            if lapsed:
                self._changed.notify_all()
            return lapsed

    # -- admin ------------------------------------------------------------------
    def purge(self, queue: str) -> int:
        with self._lock:
            self._promote(self.now())
            doomed = [e.id for e in self._entries.values()
                      if e.queue == queue and e.state != LEASED]
            for entry_id in doomed:
                del self._entries[entry_id]
            self._ready.pop(queue, None)
            return len(doomed)

    def stats(self, queue: str) -> QueueStats:
        with self._lock:
            self._promote(self.now())
            counts = {READY: 0, DELAYED: 0, LEASED: 0}
            oldest: float | None = None
            for entry in self._entries.values():
                if entry.queue == queue:
                    counts[entry.state] += 1
                    if entry.state == READY and (oldest is None or entry.ready_since < oldest):
                        oldest = entry.ready_since
            dead = sum(1 for d in self._dead.values() if d.queue == queue)
        return QueueStats(queue, ready=counts[READY], delayed=counts[DELAYED],
                          leased=counts[LEASED], dead=dead, oldest_ready_at=oldest)

    def delayed(self, queue: str, limit: int = 1000) -> list[tuple[float, Message]]:
        with self._lock:
            self._promote(self.now())
            found = sorted((e.not_before, e.id, e.envelope) for e in self._entries.values()
                           if e.queue == queue and e.state == DELAYED)
        return [(due, parse_envelope(env)) for due, _, env in found[:limit]]

    def broadcast_channel(self) -> BroadcastChannel:
        with self._lock:
            if self._broadcast is None:
                self._broadcast = MemoryBroadcast()
            return self._broadcast

    def waiting(self, queue: str) -> list[Publish]:
        with self._lock:
            now = self.now()
            self._promote(now)
            found = sorted((e for e in self._entries.values()
                            if e.queue == queue and e.state != LEASED),
                           key=lambda e: (e.state == DELAYED, e.not_before if e.state == DELAYED
                                          else 0.0, e.priority, e.id))
            return [Publish(parse_envelope(e.envelope), e.queue,
                            e.not_before if e.state == DELAYED else None, e.priority)
                    for e in found]

    def queues(self) -> list[str]:
        with self._lock:
            return list(self._queues)

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        with self._lock:
            found = [d for d in self._dead.values() if queue is None or d.queue == queue]
        return found[:limit]

    def retry_dead_letter(self, dead_id: str) -> bool:
        with self._changed:
            dead = self._dead.pop(dead_id, None)
            if dead is None:
                return False
            self._add(dead.message, dead.queue, None, None, self.now())
            self._changed.notify_all()
            return True

    def purge_dead_letters(self, queue: str | None = None) -> int:
        with self._lock:
            doomed = [k for k, d in self._dead.items() if queue is None or d.queue == queue]
            for key in doomed:
                del self._dead[key]
            return len(doomed)

    def take_token(self, key: str, rate: float, capacity: float = 1.0) -> float:
        with self._lock:
            now = self.now()
            tokens, updated = self._buckets.get(key, (float(capacity), now))
            left, wait = bucket_take(tokens, updated, now, rate, capacity)
            self._buckets[key] = (left, now)
            return wait
