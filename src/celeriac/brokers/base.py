"""The broker interface every broker implements, and the types it trades in.

Contract (checked for every broker by ``tests/contract``):

* ``publish`` stores a message durably before returning; it stays invisible
  until ``not_before`` (epoch seconds). Priority is Celery-on-Redis style:
  0-9, **0 is served first**; ``None`` means the message's own
  ``properties["priority"]`` (default 0).
* ``receive`` *leases* up to ``limit`` ready messages to ``owner`` for
  ``lease_seconds``, waiting up to ``timeout`` seconds for the first one.
  Order: priority, then publish order (FIFO) within a priority.
  A message whose lease lapsed is ready again; receiving it counts one
  ``lost`` delivery (the holder is presumed dead) and marks it redelivered.
* Every lease carries a fencing ``token``; ``ack``/``renew``/``release``/
  ``dead_letter`` act only while the token still matches, so a paused worker
  whose lease lapsed cannot ack or extend a message another worker now holds.
* ``ack`` removes for good; ``renew`` extends a lease (heartbeat);
  ``release`` gives a message back without counting a failure, optionally
  delayed (a deliberate requeue), or with ``failed=True`` counting one lost
  delivery like a lapsed lease (the worker could not settle it), so no
  message loops; ``dead_letter`` moves it to the dead-letter store with a
  reason; ``dead_letter_message`` stores a message that was never leased
  (a follow-up step the worker could not send) straight into it.
* ``expire_owner`` makes every lease of an owner lapse now (the supervisor
  calls it when a child dies), so redelivery does not wait for the lease.
* Dead letters can be listed, retried (re-published to their queue with
  counters reset) and purged.
* **Slots** (concurrency limits and ``serial_task`` locks): see
  :meth:`Broker.acquire_slot`. A slot is held *by a delivery* and only while
  that delivery's lease is live, so a killed worker never leaves one taken
  for longer than its lease. **Unique claims** (``unique_for``): see
  :meth:`Broker.claim_unique`. Brokers without them refuse with
  :class:`~celeriac.exceptions.ImproperlyConfigured` when a task uses them.
* Failures: a call that fails for a reason that may pass (connection lost,
  server down, database locked) raises
  :class:`~celeriac.exceptions.OperationalError`; a broker that retries does
  so through :func:`celeriac.retry.call` (which makes it one attempt when the
  producer already retries the publish) and bounds blocking I/O by
  :func:`celeriac.retry.time_left`, so a publish ends by its deadline.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from ..exceptions import ImproperlyConfigured
from ..messages import Message

#: Reasons a message goes to the dead-letter store.
DECODE_ERROR = "decode_error"
UNREGISTERED = "unregistered"
CONTENT_DISALLOWED = "content_disallowed"
WORKER_LOST = "worker_lost"
REJECTED = "rejected"
FOLLOWUP_FAILED = "followup_failed"

MIN_PRIORITY, MAX_PRIORITY = 0, 9


def redact(url: str) -> str:
    """``url`` without its password, for error messages and logs (``;``-joined URLs too)."""
    parts = []
    for piece in url.split(";"):
        split = urlsplit(piece)
        if split.password is None:
            parts.append(piece)
            continue
        host = split.hostname or ""
        netloc = f"{split.username or ''}:***@{host}"
        if split.port is not None:
            netloc += f":{split.port}"
        parts.append(urlunsplit((split.scheme, netloc, split.path, split.query, split.fragment)))
    return ";".join(parts)


def clamp_priority(priority: int | None) -> int:
    """Clamp a priority into 0..9 (0 is served first)."""
    if priority is None:
        return 0
    return max(MIN_PRIORITY, min(MAX_PRIORITY, int(priority)))


@dataclass(frozen=True)
class Capabilities:
    """What a broker does natively; printed by ``celeriac report`` and the docs."""

    native_delay: bool
    priorities: bool
    lease_renewal: bool
    push_wakeup: bool
    multi_host: bool


@dataclass(frozen=True)
class Delivery:
    """A message leased to one consumer. Pass it back to ack/renew/release."""

    message: Message
    queue: str
    tag: str
    token: str
    owner: str
    redelivered: bool = False
    delivery_count: int = 1
    lost_count: int = 0
    lease_expires: float = 0.0


@dataclass(frozen=True)
class Publish:
    """One item of :meth:`Broker.publish_many`."""

    message: Message
    queue: str
    not_before: float | None = None
    priority: int | None = None


@dataclass(frozen=True)
class DeadLetter:
    """A message in the dead-letter store."""

    id: str
    queue: str
    reason: str
    message: Message
    delivery_count: int
    lost_count: int
    first_delivered_at: float | None
    dead_at: float


@dataclass(frozen=True)
class SlotHolder:
    """A live holder of a slot (``celeriac status``): which message, whose, until when."""

    name: str
    tag: str
    task_id: str | None
    owner: str | None
    lease_expires: float | None


@dataclass(frozen=True)
class QueueStats:
    """Counts for one queue."""

    queue: str
    ready: int = 0
    delayed: int = 0
    leased: int = 0
    dead: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Broker(abc.ABC):
    """Base class of brokers. Subclasses set ``capabilities`` and implement the methods."""

    capabilities: ClassVar[Capabilities]
    #: URL schemes this class serves, e.g. ``("sqlite",)``.
    schemes: ClassVar[tuple[str, ...]] = ()
    def __init__(
        self,
        url: str,
        *,
        lease_seconds: float = 30.0,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.lease_seconds = float(lease_seconds)
        self.options = dict(options or {})

    # -- producing -------------------------------------------------------
    @abc.abstractmethod
    def publish(
        self,
        message: Message,
        queue: str,
        *,
        not_before: float | None = None,
        priority: int | None = None,
    ) -> None:
        """Store ``message`` on ``queue``; invisible until ``not_before``."""

    def publish_many(self, items: Iterable[Publish]) -> None:
        """Publish several messages; brokers override this to batch round trips."""
        for item in items:
            self.publish(item.message, item.queue, not_before=item.not_before,
                         priority=item.priority)

    def publish_in_transaction(self, connection: Any, items: Iterable[Publish]) -> None:
        """Publish inside the caller's open database transaction (``apply_async(...,
        connection=conn)``); only brokers that live in that database can."""
        raise ImproperlyConfigured(
            f"apply_async(connection=...) enqueues inside your database transaction and "
            f"needs the PostgreSQL broker; this broker is {self.url.split('://', 1)[0]}://")

    # -- consuming -------------------------------------------------------
    @abc.abstractmethod
    def receive(
        self,
        queues: Sequence[str],
        *,
        owner: str,
        limit: int = 1,
        timeout: float = 1.0,
    ) -> list[Delivery]:
        """Lease up to ``limit`` ready messages from ``queues`` to ``owner``."""

    @abc.abstractmethod
    def ack(self, deliveries: Sequence[Delivery]) -> int:
        """Remove for good; return how many were still leased under their token."""

    def ack_and_receive(self, acks: Sequence[Delivery], queues: Sequence[str], *, owner: str,
                        limit: int = 1, timeout: float = 1.0) -> tuple[int, list[Delivery]]:
        """``ack(acks)`` then ``receive(...)``; brokers override this to do both in one
        round trip or transaction (a worker's loop: settle what finished, take more)."""
        done = self.ack(acks) if acks else 0
        return done, self.receive(queues, owner=owner, limit=limit, timeout=timeout)

    @abc.abstractmethod
    def renew(self, deliveries: Sequence[Delivery], seconds: float | None = None) -> list[bool]:
        """Extend leases by ``seconds`` (default ``lease_seconds``); False where lost."""

    @abc.abstractmethod
    def release(self, delivery: Delivery, *, not_before: float | None = None,
                failed: bool = False) -> bool:
        """Give back (``failed``: counting one lost delivery); False if the lease was lost."""

    @abc.abstractmethod
    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        """Move to the dead-letter store with ``reason``; False if the lease was lost."""

    @abc.abstractmethod
    def dead_letter_message(self, message: Message, queue: str, reason: str) -> str:
        """Store ``message`` (never leased) in ``queue``'s dead-letter store; return its id."""

    @abc.abstractmethod
    def expire_owner(self, owner: str) -> int:
        """Make all leases held by ``owner`` lapse now; return how many."""

    # -- admin -----------------------------------------------------------
    @abc.abstractmethod
    def purge(self, queue: str) -> int:
        """Delete ready and delayed messages of ``queue``; return how many."""

    @abc.abstractmethod
    def stats(self, queue: str) -> QueueStats:
        """Counts of ready, delayed, leased and dead messages of ``queue``."""

    @abc.abstractmethod
    def queues(self) -> list[str]:
        """Names of queues that hold or held messages."""

    @abc.abstractmethod
    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """List dead letters, oldest first."""

    @abc.abstractmethod
    def retry_dead_letter(self, dead_id: str) -> bool:
        """Re-publish a dead letter to its queue with counters reset."""

    @abc.abstractmethod
    def purge_dead_letters(self, queue: str | None = None) -> int:
        """Delete dead letters (of one queue, or all)."""

    # -- slots and unique claims -------------------------------------------
    def acquire_slot(self, name: str, limit: int, delivery: Delivery) -> bool:
        """Give ``delivery`` one of the ``limit`` places of slot ``name``; False when
        ``limit`` live holders have one (or ``delivery``'s lease is not live).

        What a broker must implement (``tests/contract/test_slots_contract.py``):

        * **Atomic across every client** of the broker (processes and hosts):
          ``n`` concurrent calls on a free slot of ``limit`` get exactly
          ``min(n, limit)`` True (a Lua script, a transaction holding a lock).
        * **Held while the lease lives**: a holder counts only while its
          delivery's lease is live under the same token. It stays held as long as
          ``renew`` keeps the lease, and is free as soon as the message is acked,
          released or dead-lettered, its lease lapses, or ``expire_owner`` expires
          its owner: a worker killed with ``kill -9`` frees its slots when its
          leases lapse, never later. The brokers here check the message's lease
          itself when they count holders (the slot row names the message and its
          token), so nothing else has to renew or clean up.
        * **Idempotent**: a delivery that holds the slot gets True again.

        A broker whose leases other clients cannot read (AMQP: an unacknowledged
        delivery lives on one channel) keeps each holder with its own expiry in a
        store every client reaches (the result store's Redis or SQL database, one
        atomic set-if-below-limit step), sets that expiry to the lease's at
        acquire, extends it in :meth:`renew` for the deliveries renewed, and
        deletes it in ``ack``/``release``/``dead_letter``/``expire_owner`` and
        when its channel closes: the same guarantee, by bookkeeping.
        """
        raise self._unsupported("concurrency limits (serial_task, concurrency_limit)")

    def release_slot(self, name: str, delivery: Delivery) -> bool:
        """Give up ``delivery``'s place in ``name`` now; False if it held none."""
        raise self._unsupported("concurrency limits (serial_task, concurrency_limit)")

    def slot_holders(self, name: str | None = None) -> list[SlotHolder]:
        """Live holders of slot ``name`` (or of every slot), for ``celeriac status``."""
        return []

    def claim_unique(self, key: str, value: str, seconds: float) -> str | None:
        """Claim ``key`` for ``seconds`` with ``value`` if nobody holds it: None when
        this call claimed it, else the value of the live claim (unchanged).

        Atomic across every client (``SET NX PX``, ``INSERT ... ON CONFLICT``); a
        claim is gone after ``seconds`` by the broker's clock, or by
        :meth:`release_unique`."""
        raise self._unsupported("unique tasks (unique_for)")

    def release_unique(self, key: str, value: str) -> bool:
        """Drop the claim on ``key`` if it still holds ``value``."""
        raise self._unsupported("unique tasks (unique_for)")

    def _unsupported(self, what: str) -> ImproperlyConfigured:
        return ImproperlyConfigured(
            f"{what} need a broker that implements slots and unique claims "
            f"(memory, sqlite, redis, postgresql); this broker is "
            f"{self.url.split('://', 1)[0]}://")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    # -- helpers for subclasses -------------------------------------------
    @staticmethod
    def now() -> float:
        return time.time()

    def message_priority(self, message: Message, priority: int | None) -> int:
        return clamp_priority(message.priority if priority is None else priority)
