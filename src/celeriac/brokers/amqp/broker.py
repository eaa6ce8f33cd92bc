"""The RabbitMQ broker (``amqp://``, ``amqps://``, ``pyamqp://``), wire-compatible with Celery.

Capabilities: native delay yes (kombu's delay layout, see :mod:`.topology`),
priorities yes (on queues declared with ``x-max-priority``; 0 first, see
:mod:`.wire`), lease renewal **no**: a lease lasts while the connection that
received the message lives (RabbitMQ's own rule), push wake-up yes, multi-host yes.

Connections: one publishing connection (a channel in publisher-confirm mode:
``publish`` returns only after RabbitMQ confirmed the message, so it is on
disk for a durable queue) and one consuming connection per broker instance
and process (:class:`~.connection.Link`; a forked child opens its own).

Leases: ``receive`` consumes (``basic.consume``) the queues it is asked for,
with a per-consumer prefetch of the leases held plus ``limit`` (grown when a
caller asks for more, narrowed when it asks for four times fewer, giving back
what arrived beyond), so RabbitMQ never hands this process much more than it
can use; ``hold_back`` stops consuming and gives back what arrived unleased (a
worker whose slots are all busy with slow tasks); the deliveries that arrived
are handed out by priority (0 first) then arrival order. A lease is the
unacked delivery: ``ack`` acks it; ``release`` and ``expire_owner`` give it
back by publishing a copy that carries the counters (``x-celeriac-dc``,
``x-celeriac-lc``) and then acking the original; ``dead_letter`` publishes to
``celeriac.dead.<queue>`` and acks, or, for a ``task_queues`` queue with its
own ``x-dead-letter-exchange``, rejects it (``requeue=False``) so RabbitMQ
dead-letters it there. A new message for a ``task_queues`` queue goes where
Celery sends it (:func:`..declared.exchange_route`). Fencing:
every lease has a fresh token bound to the connection generation; after a
reconnect (RabbitMQ requeued what the old connection held) old tokens act on
nothing.

A process that dies loses its connection, and RabbitMQ redelivers what it
held at once: that is the lost delivery. A quorum queue counts it
(``x-delivery-count``); on a classic queue the ``redelivered`` flag is all
RabbitMQ keeps, so such a message is republished with its lost count raised
before it is handed out, and the count survives any number of crashes.
Deliveries that arrived but were never leased are given back uncounted when
the broker closes (republished with their counters). ``renew`` confirms a
lease this instance holds on its live connection (and, for a lease held by
another process, trusts that process's connection): time never lapses a
lease here, see ``docs/rabbitmq.md`` for ``consumer_timeout``.

Failures: ``receive`` swallows connection errors, backs off (up to 1 s) and
reconnects until its timeout, so consumers resume within about a second of
RabbitMQ coming back; other calls retry by ``retry_policy`` through
:func:`celeriac.retry.call` and then raise ``OperationalError``.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import amqp

from ...exceptions import OperationalError
from ...messages import Message
from ...retry import RetryPolicy, time_left
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
from ..declared import exchange_route, queue_specs, to_declare
from . import admin, confirming, frames, holding, topology, wire
from .broadcast import AMQPBroadcast
from .connection import RETRYABLE_ERRORS, Link, retrying
from .consuming import Consuming, Outgoing, _Arrived, _Lease
from .plain import PlainLane

logger = logging.getLogger("celeriac.brokers.amqp")


class AMQPBroker(PlainLane, Consuming, Broker):
    """Celery-compatible RabbitMQ broker: confirms, broker-side delays, dead-letter queues."""

    schemes: ClassVar[tuple[str, ...]] = ("amqp", "amqps", "pyamqp")
    capabilities: ClassVar[Capabilities] = Capabilities(
        native_delay=True, priorities=True, lease_renewal=False, push_wakeup=True,
        multi_host=True, counts_delayed=False, ready_times=False, shared_buckets=False,
    )
    declares_exchanges: ClassVar[bool] = True

    def __init__(self, url: str, *, lease_seconds: float = 30.0,
                 options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, lease_seconds=lease_seconds, options=options)
        self.retry_policy = RetryPolicy.from_celery(self.options.get("retry_policy"))
        self._buckets: dict[str, tuple[float, float]] = {}
        self._bucket_lock = threading.Lock()
        self.max_prefetch = int(self.options.get("prefetch_count") or 0)
        self.delay_queue_type = str(self.options.get("delay_queue_type") or "quorum")
        self._pub = Link(url, self.options, confirms=True, on_open=self._publisher_opened)
        self._con = Link(url, self.options, confirms=False, on_open=self._consumer_opened)
        self._state = threading.Lock()
        self._arrived: list[_Arrived] = []
        self._leases: dict[str, _Lease] = {}
        self._recount: list[_Arrived] = []
        self._consuming: dict[str, str] = {}
        self._pending_acks: list[tuple[int, int]] = []
        self._pending_rejects: set[tuple[int, int]] = set()
        self._specs = queue_specs(*map(self.options.get, ("task_queues",
                                                          "task_queue_max_priority")))
        self._prefetch = 0
        self._seq = itertools.count()
        self._tokens = itertools.count(1)
        self._nonce = uuid.uuid4().hex[:10]
        self._declared: set[str] = set()
        self._foreign: set[str] = set()  # exist with other arguments: used as they are
        self._delays_declared = False
        self._confirmed = 0
        self._published = 0
        self._nacked: set[int] = set()
        self._broadcast: AMQPBroadcast | None = None
        self.consumer_timeout = holding.consumer_timeout(self.options)
        self._holder: holding.Holder | None = None

    # -- channels ------------------------------------------------------------------
    def _publisher_opened(self, chan: amqp.Channel) -> None:
        self._declared.clear()
        self._delays_declared = False
        self._published = self._confirmed = 0
        self._nacked.clear()
        chan.events["basic_ack"].add(self._on_confirm)
        chan.events["basic_nack"].add(self._on_nack)

    def _on_confirm(self, tag: int, multiple: bool) -> None:
        self._confirmed = max(self._confirmed, tag)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._nacked.add(tag)
        self._confirmed = max(self._confirmed, tag)

    def _consumer_opened(self, chan: amqp.Channel) -> None:
        generation = self._con.generation
        with self._state:
            self._consuming.clear()
            self._arrived = [a for a in self._arrived if a.generation == generation]
            self._leases = {t: lease for t, lease in self._leases.items()
                            if lease.arrived.generation == generation}
            self._recount = [a for a in self._recount if a.generation == generation]
            self._pending_acks = [p for p in self._pending_acks if p[0] == generation]
            self._pending_rejects = {p for p in self._pending_rejects if p[0] == generation}
        self._prefetch = 0

    # -- producing -----------------------------------------------------------------
    def publish(self, message: Message, queue: str, *, not_before: float | None = None,
                priority: int | None = None) -> None:
        self.publish_many([Publish(message, queue, not_before, priority)])

    def publish_many(self, items: Iterable[Publish]) -> None:
        batch = list(items)
        if not batch:
            return
        staged = [(self.message_priority(i.message, i.priority), i) for i in batch]
        retrying(self.url, "publish", self._pub,
                 lambda chan: self._send(chan, [(i.message, i.queue, p, i.not_before, None)
                                                for p, i in staged]),
                 self.retry_policy)

    def _send(self, chan: amqp.Channel, items: Sequence[Outgoing]) -> None:
        """Publish on the confirm channel and wait until RabbitMQ confirmed every message."""
        for message, queue, _, not_before, extra in items:  # declarations first: the
            for name in to_declare(self._specs, message, queue, extra):  # delays are measured
                self._ensure_queue(chan, name)  # after them
            if not_before is not None:
                self._ensure_delays(chan)
        now = self.now()
        for message, queue, prio, not_before, extra in items:
            counters = extra.get("counters") if extra else None
            headers = {k: v for k, v in extra.items() if k != "counters"} if extra else None
            msg = wire.encode(message, prio, counters=counters, extra_headers=headers)
            if not_before is not None and not_before > now + 0.001:
                key = queue if extra else topology.delayed_key(  # where it would go now
                    self._specs, message.properties.get("delivery_info"), queue)
                routing_key, expiration = topology.delay_route(not_before - now, key)
                if expiration is not None:
                    msg.properties["expiration"] = str(expiration)
                else:
                    msg.properties.pop("expiration", None)
                self._publish_on(chan, msg, topology.DELAY_ENTRY, routing_key)
            elif extra is None and (route := exchange_route(
                    self._specs, message.properties.get("delivery_info"), queue)):
                self._publish_on(chan, msg, *route)  # new: through its exchange (kombu)
            else:  # to the queue itself (given back, retried): never fanned out again
                self._publish_on(chan, msg, "", queue)
        self._wait_confirms(chan)

    def _publish_on(self, chan: amqp.Channel, msg: amqp.Message, exchange: str,
                    routing_key: str) -> None:
        """Send one message on the confirm channel (:meth:`_wait_confirms` waits for it),
        in one socket write (:func:`.frames.publish`)."""
        frames.publish(chan, msg, exchange, routing_key)
        self._published += 1

    def _wait_confirms(self, chan: amqp.Channel, bound: float | None = None) -> None:
        """Wait (at most ``bound`` s, else the running call's deadline, else 30 s) until
        RabbitMQ confirmed all published; OperationalError when it refused any."""
        target = self._published
        limit = time_left() if bound is None else bound
        confirming.wait(chan.connection, (chan.channel_id, self._on_confirm, self._on_nack),
                        lambda: self._confirmed >= target,
                        time.monotonic() + (limit if limit is not None else 30.0))
        if self._nacked:
            nacked, self._nacked = len(self._nacked), set()
            raise OperationalError(f"RabbitMQ refused {nacked} message(s) (basic.nack)")

    def _ensure_queue(self, chan: amqp.Channel, queue: str) -> None:
        if queue in self._declared:
            return
        spec = self._specs.get(queue)
        if queue not in self._foreign and not topology.declare_task_queue(
                chan, queue, self.options, spec):
            self._foreign.add(queue)
            raise admin.ChannelReset(f"queue {queue!r} exists with other arguments")
        topology.bind_to_delays(chan, queue, spec)
        admin.register(self, chan, queue)
        self._declared.add(queue)

    def declare_delays(self) -> None:
        """Declare the delay layout now (else the first delayed publish does it: RabbitMQ
        takes about half a second to create its 28 quorum queues)."""
        retrying(self.url, "declare", self._pub, self._ensure_delays, self.retry_policy)

    def _ensure_delays(self, chan: amqp.Channel) -> None:
        if not self._delays_declared:
            topology.declare_delay_layout(chan, self.delay_queue_type)
            self._delays_declared = True

    def _publish_raw(self, items: Sequence[tuple[Message, str, int, float | None,
                                                 dict[str, Any] | None]]) -> None:
        retrying(self.url, "publish", self._pub, lambda chan: self._send(chan, items),
                 self.retry_policy)

    def _give_back(self, leases: Sequence[_Lease], *, lost: int, not_before: float | None,
                   what: str) -> None:
        items: list[Outgoing] = []
        for lease in leases:
            counters = wire.Counters(lease.deliveries, lease.lost + lost, lease.first)
            items.append((lease.arrived.message, lease.arrived.queue,
                          lease.arrived.message.priority, not_before, {"counters": counters}))
        retrying(self.url, what, self._pub, lambda chan: self._send(chan, items),
                 self.retry_policy)
        self._queue_acks(leases)

    def release(self, delivery: Delivery, *, not_before: float | None = None,
                failed: bool = False) -> bool:
        leases = self._pop_leases([delivery])
        if not leases:
            return False
        self._give_back(leases, lost=1 if failed else 0, not_before=not_before,
                        what="release")
        return True

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        leases = self._pop_leases([delivery])
        if not leases:
            return False
        lease = leases[0]
        spec = self._specs.get(lease.arrived.queue)
        if spec is not None and spec.dead_letter_exchange is not None:
            self._queue_acks(leases, reject=True)  # RabbitMQ dead-letters it (x-death)
            return True
        retrying(self.url, "dead_letter", self._pub, lambda chan: admin.store_dead(
            chan, self, lease.arrived.message, lease.arrived.queue, reason,
            wire.Counters(lease.deliveries, lease.lost, lease.first)), self.retry_policy)
        self._queue_acks(leases)
        return True

    def dead_letter_message(self, message: Message, queue: str, reason: str) -> str:
        return retrying(self.url, "dead_letter_message", self._pub, lambda chan: admin.store_dead(
            chan, self, message, queue, reason, wire.Counters()), self.retry_policy)

    def expire_owner(self, owner: str) -> int:
        generation = self._con.generation
        with self._state:
            tokens = [t for t, lease in self._leases.items() if lease.owner == owner]
            leases = [self._leases.pop(t) for t in tokens]
        leases = [lease for lease in leases if lease.arrived.generation == generation]
        if leases:
            self._give_back(leases, lost=1, not_before=None, what="expire_owner")
        return len(leases)

    # -- admin ---------------------------------------------------------------------------
    def purge(self, queue: str) -> int:
        purged = int(retrying(self.url, "purge", self._pub,
                              lambda chan: admin.purge(chan, queue), self.retry_policy))
        with self._state:
            mine = [a for a in self._arrived if a.queue == queue]
            self._arrived = [a for a in self._arrived if a.queue != queue]
            self._pending_acks.extend((a.generation, a.tag) for a in mine)
        return purged + len(mine)

    def take_token(self, key: str, rate: float, capacity: float = 1.0) -> float:
        """Rate limits from a bucket kept in this process: RabbitMQ has no shared counter,
        so on amqp:// ``rate_limit`` holds per worker process (Celery: per worker),
        not across the cluster as on the other brokers. Warned once per key."""
        with self._bucket_lock:
            now = time.time()
            if key not in self._buckets:
                logger.warning("rate_limit of %s is enforced per worker process on amqp:// "
                               "(RabbitMQ has no shared counter; with prefork -c N the "
                               "node's limit is N times the rate)", key.removeprefix("task:"))
            tokens, updated = self._buckets.get(key, (float(capacity), now))
            left, wait = bucket_take(tokens, updated, now, rate, capacity)
            self._buckets[key] = (left, now)
            return wait

    def stats(self, queue: str) -> QueueStats:
        ready, consumers, dead = retrying(self.url, "stats", self._pub,
                                          lambda chan: admin.counts(chan, queue),
                                          self.retry_policy)
        if queue in self._consuming:  # what RabbitMQ already sent us is ours to count
            with self._con.lock:
                try:
                    if queue in self._consuming and self._con.connected:
                        chan = self._con.channel()
                        # the reply comes after every delivery the queue made before it
                        _, ready, consumers = chan.queue_declare(queue, passive=True)
                        self._drain(chan.connection, 0.0)
                except RETRYABLE_ERRORS:
                    self._con.reset()
        with self._state:
            buffered = sum(1 for a in self._arrived if a.queue == queue)
            leased = sum(1 for lease in self._leases.values() if lease.arrived.queue == queue)
        return QueueStats(queue, ready=ready + buffered, delayed=0, leased=leased, dead=dead,
                          extra={"consumers": consumers})

    def queues(self) -> list[str]:
        return retrying(self.url, "queues", self._pub, lambda chan: admin.catalog(chan, self),
                        self.retry_policy)

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        return admin.with_scan_channel(self, "dead_letters",
                                       lambda chan: admin.read_dead(chan, self, queue, limit))

    def retry_dead_letter(self, dead_id: str) -> bool:
        return admin.with_scan_channel(self, "retry_dead_letter",
                                       lambda chan: admin.retry_dead(chan, self, dead_id))

    def purge_dead_letters(self, queue: str | None = None) -> int:
        return admin.with_scan_channel(self, "purge_dead_letters",
                                       lambda chan: admin.purge_dead(chan, self, queue))

    def _keep_past_consumer_timeout(self) -> None:
        """Start this process's rollover thread (:mod:`.holding`) unless it runs."""
        if self.consumer_timeout and (self._holder is None or not self._holder.alive()):
            self._holder = holding.Holder(self, self.consumer_timeout)

    def _roll_if_due(self) -> None:
        if self._holder is not None and self._holder.due():
            self._holder.check()

    def broadcast_channel(self) -> BroadcastChannel:
        """Events and remote control on kombu's AMQP exchanges (:mod:`.broadcast`)."""
        if self._broadcast is None:
            self._broadcast = AMQPBroadcast(self.url, self.options)
        return self._broadcast

    def delayed(self, queue: str, limit: int = 1000) -> list[tuple[float, Message]]:
        """Always ``[]``: delayed messages wait in the shared ``celery_delayed_*`` queues,
        which RabbitMQ cannot list without consuming them (``inspect().scheduled()``
        shows nothing on RabbitMQ, as with a Celery worker on quorum queues)."""
        return []

    def close(self) -> None:
        """Give back what arrived but was never leased (uncounted), then disconnect."""
        if self._holder is not None:
            self._holder.stop()
        with self._con.lock:
            try:
                if self._con.connected:
                    chan = self._con.channel()
                    for tag in list(self._consuming.values()):
                        chan.basic_cancel(tag)
                    self._consuming.clear()
                    self._drain(chan.connection, 0.0)
                    with self._state:
                        unleased, self._arrived = self._arrived, []
                    self._return_unleased(chan, unleased)
                    self._flush_acks(chan)
            except Exception:
                logger.debug("closing the RabbitMQ consumer", exc_info=True)
        self._con.close()
        self._pub.close()
        if self._broadcast is not None:
            self._broadcast.close()
