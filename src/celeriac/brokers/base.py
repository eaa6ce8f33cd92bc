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
* Slots (held only while the holder's lease lives) and unique claims:
  :mod:`celeriac.brokers.slotting` says what a broker must implement.
* Failures: a call that fails for a reason that may pass (connection lost,
  server down, database locked) raises
  :class:`~celeriac.exceptions.OperationalError`; a broker that retries does
  so through :func:`celeriac.retry.call` (which makes it one attempt when the
  producer already retries the publish) and bounds blocking I/O by
  :func:`celeriac.retry.time_left`, so a publish ends by its deadline.

Broadcast (monitoring events and remote control, see docs/monitoring.md, "For
broker authors"): :meth:`Broker.broadcast_channel` returns a
:class:`BroadcastChannel`, kombu's fan-out and reply model reduced to four calls:

* ``publish(Broadcast)`` fans a message out to every subscription of its
  ``exchange`` whose pattern matches its ``routing_key`` (AMQP topic rules:
  ``*`` one word, ``#`` zero or more; an empty pattern matches only an empty
  key, ``#`` every key). Delivery is transient and best-effort: only
  subscriptions open at publish time get it, nothing is stored for later.
* ``subscribe(exchange, patterns)`` opens a :class:`Subscription`; its
  ``get(timeout)`` returns what arrived (waiting up to ``timeout`` seconds for
  the first), in publish order per publisher; ``close()`` ends it.
* ``open_mailbox(exchange, routing_key)`` declares a private reply queue bound
  to a *direct* exchange with ``routing_key`` (pidbox replies:
  ``reply.celery.pidbox`` and the client's ``oid``); ``send_to_mailbox``
  delivers a :class:`Broadcast` to the mailboxes bound with its routing key
  (False when none is: the client is gone). Mailbox messages wait until read
  or until the mailbox is closed (``close()`` deletes it).

Celery's names are used as they are: events go to the ``celeryev`` exchange
with routing keys such as ``task.multi`` and ``worker.heartbeat``; control
requests to ``celery.pidbox`` with an empty routing key; replies to
``reply.celery.pidbox`` with the client's ``oid``. A broker that speaks
Celery's wire format maps them to what kombu does on it (Redis: ``PUBLISH``
on ``/<db>.<exchange>/<routing key>`` and ``LPUSH`` to ``<oid>.reply.celery.pidbox``;
AMQP: exchanges and queues), so real Celery workers, ``celery events`` and
Flower see celeriac's messages and the other way round.

:meth:`Broker.delayed` lists the messages of a queue that wait for their
``not_before`` (``inspect().scheduled()``); :class:`QueueStats` carries
``oldest_ready_at`` (when the oldest ready message became ready) for the
time-to-start metrics.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from .. import clock
from ..exceptions import ImproperlyConfigured
from ..messages import Message
from .slotting import SlotMethods

#: Reasons a message goes to the dead-letter store.
DECODE_ERROR = "decode_error"
UNREGISTERED = "unregistered"
CONTENT_DISALLOWED = "content_disallowed"
WORKER_LOST = "worker_lost"
REJECTED = "rejected"
FOLLOWUP_FAILED = "followup_failed"
#: message security (docs/security.md): over ``task_message_max_size``; not signed while
#: signing is required; signature or seal invalid (unknown signer, tampered, expired
#: certificate, undecryptable); a replay (seen before, or older than the replay window)
OVERSIZED = "oversized"
UNSIGNED = "unsigned"
BAD_SIGNATURE = "bad_signature"
REPLAYED = "replayed"

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
    #: knows when a ready message became ready (``QueueStats.oldest_ready_at``)
    ready_times: bool = True


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


@dataclass(frozen=True)
class Broadcast:
    """One message on a fan-out exchange or in a reply mailbox (events, pidbox).

    ``body`` is the serialized payload (JSON for events and pidbox), ``headers``
    the kombu message headers (``hostname`` for events; ``clock``/``expires`` for
    control requests; ``ticket``/``clock`` for replies); ``persistent`` is AMQP's
    ``delivery_mode`` 2 (Celery sends pidbox requests persistent, events and
    replies transient)."""

    exchange: str
    routing_key: str
    body: bytes
    headers: Mapping[str, Any] = field(default_factory=dict)
    content_type: str = "application/json"
    content_encoding: str = "utf-8"
    persistent: bool = False


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: words split by ``.``, ``*`` is one word, ``#`` zero or more."""
    if pattern == "#":
        return True

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        if not k:
            return False
        return (p[0] == "*" or p[0] == k[0]) and match(p[1:], k[1:])

    return match(pattern.split(".") if pattern else [],
                 key.split(".") if key else [])


class Subscription(abc.ABC):
    """An open subscription or mailbox; use as a context manager or ``close()`` it."""

    @abc.abstractmethod
    def get(self, timeout: float = 1.0) -> list[Broadcast]:
        """What arrived since the last call, waiting up to ``timeout`` for the first."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop receiving (a mailbox is deleted with what it still holds)."""

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class BroadcastChannel(abc.ABC):
    """Fan-out publishing, subscriptions and reply mailboxes (see the module docstring)."""

    @abc.abstractmethod
    def publish(self, message: Broadcast) -> None:
        """Deliver to every open subscription of ``message.exchange`` that matches."""

    @abc.abstractmethod
    def subscribe(self, exchange: str, patterns: Sequence[str] = ("#",)) -> Subscription:
        """Receive what is published to ``exchange`` with a key matching a pattern."""

    @abc.abstractmethod
    def open_mailbox(self, exchange: str, routing_key: str) -> Subscription:
        """Declare a reply queue bound to the direct ``exchange`` with ``routing_key``."""

    @abc.abstractmethod
    def send_to_mailbox(self, message: Broadcast) -> bool:
        """Queue ``message`` in the mailboxes bound with its routing key; False if none."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections held for broadcasting."""


class Broker(SlotMethods, abc.ABC):
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
