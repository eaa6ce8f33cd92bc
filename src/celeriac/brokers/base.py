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
* ``expire_owner`` makes every lease of an owner lapse now (a child died).
* Dead letters can be listed, retried (counters reset) and purged.
* ``take_token`` (task ``rate_limit``): a token bucket shared by every client of
  the broker; :mod:`celeriac.brokers.buckets` says exactly what it must do.
* Slots (held only while the holder's lease lives) and unique claims:
  :mod:`celeriac.brokers.slotting` says what a broker must implement.
* Failures that may pass (connection lost, server down, database locked) raise
  :class:`~celeriac.exceptions.OperationalError`; retries go through
  :func:`celeriac.retry.call` (one attempt inside a producer's publish), blocking
  I/O is bounded by :func:`celeriac.retry.time_left` (the publish deadline).

Broadcast (monitoring events and remote control): :meth:`Broker.broadcast_channel`
returns a :class:`~celeriac.brokers.broadcast.BroadcastChannel`; its contract is in
:mod:`celeriac.brokers.broadcast`.

:meth:`Broker.delayed` lists the messages of a queue that wait for their
``not_before`` (``inspect().scheduled()``); :class:`QueueStats` carries
``oldest_ready_at`` (when the oldest ready message became ready) for the
time-to-start metrics.
"""

from __future__ import annotations

import abc
import functools
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from .. import clock
from ..exceptions import ImproperlyConfigured
from ..messages import Message, parse_envelope
from .broadcast import (  # noqa: F401 - re-exported: brokers import them from here
    Broadcast,
    BroadcastChannel,
    Subscription,
    topic_matches,
)
from .declared import no_effect_elsewhere
from .slotting import SlotMethods

#: Reasons a message goes to the dead-letter store.
DECODE_ERROR = "decode_error"
UNREGISTERED = "unregistered"
CONTENT_DISALLOWED = "content_disallowed"
WORKER_LOST = "worker_lost"
REJECTED = "rejected"
#: a timed-out run not to be acknowledged (``acks_on_timeout=False``) reached the
#: redelivery limit
TIME_LIMIT = "time_limit"
FOLLOWUP_FAILED = "followup_failed"
#: message security (docs/security.md): over ``task_message_max_size``; not signed while
#: signing is required; signature or seal invalid (unknown signer, tampered, expired
#: certificate, undecryptable); a replay (seen before, or older than the replay window)
OVERSIZED = "oversized"
UNSIGNED = "unsigned"
BAD_SIGNATURE = "bad_signature"
REPLAYED = "replayed"

MIN_PRIORITY, MAX_PRIORITY = 0, 9

#: Celery settings passed, when set, in broker options (RabbitMQ declares queues with them)
QUEUE_SETTINGS = ("task_default_queue_type", "task_queue_max_priority", "task_queues")


@functools.lru_cache(maxsize=256)
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
    #: ``stats``/``purge`` reach delayed messages (not RabbitMQ's shared delay layout)
    counts_delayed: bool = True
    #: knows when a ready message became ready (``QueueStats.oldest_ready_at``)
    ready_times: bool = True
    #: ``take_token`` buckets are shared by every client (False: kept per process)
    shared_buckets: bool = True


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
    #: when the message became ready (publish or end of delay), if the broker knows
    published_at: float | None = None
    #: at least the bytes of the JSON envelope the message was parsed from, when the
    #: broker read it whole (:func:`envelope_bytes`; not RabbitMQ): bounds the worker's
    #: size check (:func:`~celeriac.message_size.check_size`)
    envelope_size: int | None = None
    #: (task id, its stored meta or None) read in the lease's own round trip, when the
    #: broker shares the result store's server (:meth:`Broker.peek_revocations`)
    stored_meta: tuple[str, bytes | None] | None = None


def envelope_bytes(raw: str | bytes) -> int:
    """At least the UTF-8 bytes of a stored envelope: its length as bytes, four per
    character as text (no encoding just to measure it)."""
    return len(raw) if isinstance(raw, bytes) else 4 * len(raw)


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

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> DeadLetter:
        """From a row of the SQL brokers' ``dead_letters`` table: ``(id, queue, reason,
        envelope, delivery_count, lost_count, first_delivered_at, dead_at)``."""
        return cls(id=str(row[0]), queue=row[1], reason=row[2],
                   message=parse_envelope(row[3]), delivery_count=row[4],
                   lost_count=row[5], first_delivered_at=row[6], dead_at=row[7])


@dataclass(frozen=True)
class QueueStats:
    """Counts for one queue; ``oldest_ready_at``: epoch seconds since which the oldest
    ready message has been ready (its publish time, or its ``not_before`` when it was
    delayed); None when no message is ready or the broker cannot tell."""

    queue: str
    ready: int = 0
    delayed: int = 0
    leased: int = 0
    dead: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    oldest_ready_at: float | None = None


class Broker(SlotMethods, abc.ABC):
    """Base class of brokers. Subclasses set ``capabilities`` and implement the methods."""

    capabilities: ClassVar[Capabilities]
    #: URL schemes this class serves, e.g. ``("sqlite",)``.
    schemes: ClassVar[tuple[str, ...]] = ()
    #: honours ``task_queues`` exchanges, routing keys and queue arguments (RabbitMQ)
    declares_exchanges: ClassVar[bool] = False

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
        lost = no_effect_elsewhere(self, self.options.get("task_queues"))
        if lost:  # warned here, once per place: the app passes task_queues to every broker
            warnings.warn(lost, UserWarning, stacklevel=2)

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
    def declare_consumed(self, queues: Sequence[str]) -> None:
        """Make ``queues`` exist on the server as this process will consume them, before
        its first ``receive``: a worker says it is ready only after this, so what is
        published to them from then on is routable (RabbitMQ: queues, exchanges,
        bindings, the delay layout). Here a publish creates its queue: nothing to do."""

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

    def hold_back(self, queues: Sequence[str]) -> int:
        """This process will take nothing more from ``queues`` until its next receive
        (its slots are busy with slow tasks). A broker that pushes messages ahead of
        ``receive`` (RabbitMQ's prefetch window) gives back what it holds unleased and
        stops the pushing; the others hold nothing unleased and do nothing. Returns
        how many messages went back."""
        return 0

    def lease_alive(self, delivery: Delivery) -> bool:
        """False when this process already knows the lease is gone, without asking the
        server (RabbitMQ: the connection that carried it closed, so the server gave the
        message back): a worker then does not start it. True by default."""
        return True

    def ack_and_receive(self, acks: Sequence[Delivery], queues: Sequence[str], *, owner: str,
                        limit: int = 1, timeout: float = 1.0) -> tuple[int, list[Delivery]]:
        """``ack(acks)`` then ``receive(...)``; brokers override this to do both in one
        round trip or transaction (a worker's loop: settle what finished, take more)."""
        done = self.ack(acks) if acks else 0
        return done, self.receive(queues, owner=owner, limit=limit, timeout=timeout)

    def settle_and_receive(self, store: Any, results: Sequence[tuple[str, Mapping[str, Any]]],
                           expires: float | None, acks: Sequence[Delivery],
                           queues: Sequence[str], *, owner: str,
                           limit: int = 1) -> tuple[list[bool], int, list[Delivery]]:
        """A worker's batch settled, then what is ready now leased (no wait): ``results``
        stored in ``store`` (``set_many``, the REVOKED rule), then ``acks``
        acknowledged, never before. Returns (written per result, acknowledged,
        deliveries). Brokers that share a server with the store override this to do
        all of it in one round trip (Redis)."""
        written = store.set_many(results, expires=expires) if results else []
        done, got = self.ack_and_receive(acks, queues, owner=owner, limit=limit, timeout=0.0)
        return written, done, got

    def peek_revocations(self, store: Any) -> bool:
        """Read each leased task's stored meta in ``store`` with the lease itself
        (``Delivery.stored_meta``: the worker's revocation check needs no read of its
        own); True when this broker does, which needs a shared server (Redis)."""
        return False

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

    # -- rate limits -------------------------------------------------------
    @abc.abstractmethod
    def take_token(self, key: str, rate: float, capacity: float = 1.0) -> float:
        """Take one token from the bucket ``key``; return 0.0 if taken, else the seconds
        until one will be there (nothing is taken then). What a broker must implement:
        :mod:`celeriac.brokers.buckets`."""

    def waiting(self, queue: str) -> list[Publish]:
        """The messages of ``queue`` not leased to anyone (ready, then delayed), as published
        (``not_before`` None when ready), for tests (``celeriac.contrib.testing``).
        Optional: the memory and SQLite brokers have it."""
        raise NotImplementedError(f"{type(self).__name__} cannot list waiting messages; "
                                  "enqueue assertions need the memory or SQLite broker")

    def close(self) -> None:
        """Release connections."""

    # -- monitoring --------------------------------------------------------
    def broadcast_channel(self) -> BroadcastChannel:
        """The fan-out channel for events and remote control (one per broker instance)."""
        raise ImproperlyConfigured(
            f"the {self.url.split('://', 1)[0]}:// broker has no broadcast channel: events "
            f"and remote control (inspect/control) are unavailable on it")

    def delayed(self, queue: str, limit: int = 1000) -> list[tuple[float, Message]]:
        """Messages of ``queue`` waiting for their ``not_before``: ``(not_before, message)``,
        soonest first (``inspect().scheduled()`` lists these)."""
        raise ImproperlyConfigured(
            f"the {self.url.split('://', 1)[0]}:// broker cannot list its delayed messages")

    # -- helpers for subclasses -------------------------------------------
    @staticmethod
    def now() -> float:
        return clock.time()

    def message_priority(self, message: Message, priority: int | None) -> int:
        return clamp_priority(message.priority if priority is None else priority)
