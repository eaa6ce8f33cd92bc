"""The consuming half of the RabbitMQ broker: consumers, prefetch, leases, acks.

:class:`Consuming` is mixed into :class:`~.broker.AMQPBroker` (which owns the
connections and publishing, and documents the lease rules). Deliveries read
from the consuming channel wait in ``_arrived`` until ``receive`` leases them
by priority (0 first) then arrival; a lease is the unacked delivery, named by
a token that is never reused and bound to the connection generation.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import amqp
from amqp import exceptions as amqp_errors

from ...messages import Message
from ...retry import RetryPolicy, Streak
from ..base import Delivery, redact
from ..declared import QueueSpec
from . import admin, holding, reading, topology, wire
from .acking import Acking
from .connection import RETRYABLE_ERRORS, Link, retrying

logger = logging.getLogger("celeriac.brokers.amqp")

#: how ``receive`` waits between attempts while RabbitMQ is unreachable
RECEIVE_BACKOFF = RetryPolicy(max_retries=None, interval_start=0.05, interval_step=0.2,
                              interval_max=1.0)

#: the window shrinks once a receive needs this many times fewer than it allows
NARROW_BELOW = 4

#: one message to publish: (message, queue, priority, not_before, extra: counters/headers)
Outgoing = tuple[Message, str, int, "float | None", "dict[str, Any] | None"]


@dataclass
class _Arrived:
    """A delivery on the consuming channel, not yet leased."""

    seq: int
    queue: str
    tag: int
    generation: int
    message: Message
    counters: wire.Counters
    returns: int
    redelivered: bool
    #: when it arrived on this channel (monotonic): RabbitMQ's consumer_timeout runs from it
    received: float = 0.0


@dataclass
class _Lease:
    arrived: _Arrived
    owner: str
    deliveries: int
    lost: int
    first: float


class Consuming(Acking):
    """Consumers, the arrived buffer and the leases of one broker instance."""

    url: str
    options: dict[str, Any]
    lease_seconds: float
    max_prefetch: int
    retry_policy: RetryPolicy
    delay_queue_type: str
    _con: Link
    _state: threading.Lock
    _arrived: list[_Arrived]
    _leases: dict[str, _Lease]
    _recount: list[_Arrived]
    _consuming: dict[str, str]
    _pending_acks: list[tuple[int, int]]
    _pending_rejects: set[tuple[int, int]]
    _specs: dict[str, QueueSpec]
    _prefetch: int
    _seq: itertools.count[int]
    _tokens: itertools.count[int]
    _nonce: str
    _foreign: set[str]
    #: publish and wait for the confirms (the broker's publishing half)
    _publish_raw: Callable[[Sequence[Outgoing]], None]
    #: start the rollover thread of :mod:`.holding` if it is not running
    _keep_past_consumer_timeout: Callable[[], None]
    #: the rollover, from the consuming loop itself when due (con.lock held)
    _roll_if_due: Callable[[], None]

    now: Callable[[], float]

    def receive(self, queues: Sequence[str], *, owner: str, limit: int = 1,
                timeout: float = 1.0) -> list[Delivery]:
        queues = list(dict.fromkeys(queues))
        limit = max(1, int(limit))
        deadline = time.monotonic() + max(0.0, timeout)
        pauses = RECEIVE_BACKOFF.intervals()
        first = True
        while True:
            got = self._take(queues, owner, limit)
            if got:
                self._keep_past_consumer_timeout()
                return got
            if timeout <= 0 and self._deferring():
                return []  # the caller has work in hand; its acks are not due yet
            left = deadline - time.monotonic()
            if not first and left <= 0:
                return []
            first = False
            if not self._con.lock.acquire(timeout=max(left, 0.0)):
                continue
            streak = self._receive_streak()
            try:
                self._pump(queues, limit, max(left, 0.0))
                streak.ok()
            except RETRYABLE_ERRORS as exc:
                logger.debug("RabbitMQ receive failed (%s); reconnecting", exc)
                streak.failed(exc)  # the third in a row reports the outage, once
                self._con.reset()
                time.sleep(min(next(pauses), max(0.0, deadline - time.monotonic())))
            except admin.ChannelReset:
                self._con.reset_channel()
            except amqp_errors.IrrecoverableChannelError as exc:
                # the server closed the consuming channel (consumer_timeout: the
                # ``consumer_timeout`` option is below the server's): what it held is
                # requeued, so the connection and its delivery tags are dropped
                logger.warning("RabbitMQ closed the consuming channel (%s); reconnecting", exc)
                self._con.reset()
            finally:
                self._con.lock.release()

    def ack_and_receive(self, acks: Sequence[Delivery], queues: Sequence[str], *, owner: str,
                        limit: int = 1, timeout: float = 1.0) -> tuple[int, list[Delivery]]:
        """``ack(acks)`` then ``receive(...)``; with no wait (the caller has work in hand)
        the acks are deferred to the next read of the socket (:mod:`.acking`)."""
        done = 0
        if acks:
            leases = self._pop_leases(acks)
            if leases:
                done = self._defer_acks(leases) if timeout <= 0 else self._queue_acks(leases)
        return done, self.receive(queues, owner=owner, limit=limit, timeout=timeout)

    def _receive_streak(self) -> Streak:
        """Failed receives in a row, across calls (each call may fail only once)."""
        streak: Streak | None = getattr(self, "_streak", None)
        if streak is None:
            streak = self._streak = Streak(f"RabbitMQ at {redact(self.url)}", "receive")
        return streak

    def _pump(self, queues: list[str], limit: int, wait: float) -> None:
        """Consume ``queues``, settle queued acks, and read what arrived (con.lock held)."""
        chan = self._con.channel()
        conn = chan.connection
        if self.options.get("heartbeat"):
            conn.heartbeat_tick()
        self._flush_acks(chan)
        with self._state:
            want = len(self._leases) + len(self._arrived) + limit
            needed = len(self._leases) + limit
        if self.max_prefetch:
            want, needed = min(want, self.max_prefetch), min(needed, self.max_prefetch)
        if want > self._prefetch:
            self._widen(chan, want)
        elif needed * NARROW_BELOW <= self._prefetch:  # the caller asks for far fewer now
            self._narrow(chan, needed, limit)
        new = [q for q in queues if q not in self._consuming]
        self._declare_on(chan, new)
        for queue in new:
            tag = chan.basic_consume(queue, callback=self._arrival(queue))
            self._consuming[queue] = tag
        for queue in new:  # a round trip per queue: what it delivered is read by then
            chan.queue_declare(queue, passive=True)
        self._drain(conn, 0.0)
        if not self._has(queues) and wait > 0:
            self._drain(conn, min(wait, 1.0), once=True)
            self._drain(conn, 0.0)
        self._settle_recounts(chan)
        self._roll_if_due()

    def declare_consumed(self, queues: Sequence[str]) -> None:
        """Declare ``queues`` on the consuming connection as ``receive`` will consume them
        (queue, exchange, binding, delay bindings, catalog, delay layout), before the
        first receive: a worker says it is ready after this (Celery's worker declares
        its queues first too). A queue that exists with other arguments is used as it
        is. Retried by ``retry_policy``, then OperationalError."""
        names = list(dict.fromkeys(queues))

        def declare(chan: amqp.Channel) -> None:
            try:
                self._declare_on(chan, names)
            except admin.ChannelReset:  # a queue that exists with other arguments: noted
                self._con.reset_channel()
                self._declare_on(self._con.channel(), names)

        retrying(self.url, "declare", self._con, declare, self.retry_policy)

    def _declare_on(self, chan: amqp.Channel, queues: list[str]) -> None:
        """Declare ``queues`` and their delay bindings; list them in the catalog and
        declare the delay layout once per connection (con.lock held). ChannelReset:
        a queue exists with other arguments (noted: used as it is from then on)."""
        catalogued: set[tuple[int, str]] = getattr(self, "_catalogued", set())  # once each
        fresh = [q for q in queues if (self._con.generation, q) not in catalogued]
        if fresh:  # listed in the catalog; the delay layout Celery clients publish into
            admin.register_consumed(chan, fresh, self.delay_queue_type)
            self._catalogued = catalogued | {(self._con.generation, q) for q in fresh}
        for queue in queues:
            spec = self._specs.get(queue)
            if queue not in self._foreign and not topology.declare_task_queue(
                    chan, queue, self.options, spec):
                self._foreign.add(queue)
                raise admin.ChannelReset(queue)
            topology.bind_to_delays(chan, queue, spec)

    def _narrow(self, chan: amqp.Channel, want: int, keep: int) -> None:
        """Shrink the window to ``want`` and give back (uncounted) what arrived beyond
        the ``keep`` the caller asked for, so nothing waits here that another consumer
        could run."""
        self._widen(chan, want)
        self._drain(chan.connection, 0.0)
        with self._state:
            ordered = sorted(self._arrived, key=lambda a: (a.message.priority, a.seq))
            self._arrived, surplus = ordered[:keep], ordered[keep:]
        self._return_unleased(chan, surplus)

    def hold_back(self, queues: Sequence[str]) -> int:
        """Stop consuming ``queues`` (the next ``receive`` consumes them again, with a
        window sized for what it asks) and give back what arrived unleased."""
        with self._con.lock:
            if not self._con.connected:
                return 0
            try:
                chan = self._con.channel()
                for queue in queues:
                    tag = self._consuming.pop(queue, None)
                    if tag is not None:
                        chan.basic_cancel(tag)
                self._drain(chan.connection, 0.0)
                wanted = set(queues)
                with self._state:
                    back = [a for a in self._arrived if a.queue in wanted]
                    self._arrived = [a for a in self._arrived if a.queue not in wanted]
                self._prefetch = 0  # the next consumer gets the window receive asks for
                self._return_unleased(chan, back)
            except (*RETRYABLE_ERRORS, amqp_errors.IrrecoverableChannelError) as exc:
                logger.debug("hold_back failed (%s); reconnecting", exc)  # all requeued
                self._con.reset()
                return 0
            return len(back)

    def _return_unleased(self, chan: amqp.Channel, arrived: list[_Arrived]) -> None:
        """Give back deliveries never leased: a copy with their counters, then an ack."""
        generation = self._con.generation
        arrived = [a for a in arrived if a.generation == generation]
        if not arrived:
            return
        self._publish_raw([(a.message, a.queue, a.message.priority, None,
                            {"counters": a.counters}) for a in arrived])
        for a in arrived:
            chan.basic_ack(a.tag)

    def _widen(self, chan: amqp.Channel, want: int) -> None:
        """Let each consumer hold ``want`` unacked deliveries.

        RabbitMQ applies a per-consumer prefetch (the only kind quorum queues
        accept) to consumers made after it, so each consumer is replaced: the new
        one starts, then the old one is cancelled. Deliveries of the old consumer
        stay ours (a cancel requeues nothing) and the ones in flight still arrive
        before the cancel's reply, to the same callback.
        """
        chan.basic_qos(0, want, False)
        self._prefetch = want
        for queue, old in list(self._consuming.items()):
            self._consuming[queue] = chan.basic_consume(queue, callback=self._arrival(queue))
            chan.basic_cancel(old)

    @staticmethod
    def _drain(conn: amqp.Connection, timeout: float, once: bool = False) -> None:
        reading.drain(conn, timeout, once)

    def _arrival(self, queue: str) -> Any:
        def on_message(raw: amqp.Message) -> None:
            headers = raw.properties.get("application_headers") or {}
            message, counters, returns = wire.decode(raw, queue)
            info = raw.delivery_info or {}
            # a copy a dead worker's holding queue sent back counts as a lost delivery
            lost = bool(info.get("redelivered")) or holding.from_holding_queue(headers)
            arrived = _Arrived(next(self._seq), queue, int(info["delivery_tag"]),
                               self._con.generation, message, counters, returns, lost,
                               time.monotonic())
            with self._state:
                if arrived.redelivered and not returns and "x-delivery-count" not in (
                        raw.properties.get("application_headers") or {}):
                    self._recount.append(arrived)  # classic queue: persist the count first
                else:
                    self._arrived.append(arrived)
        return on_message

    def _settle_recounts(self, chan: amqp.Channel) -> None:
        with self._state:
            todo, self._recount = self._recount, []
        if not todo:
            return
        items = []
        for a in todo:
            counters = wire.Counters(a.counters.deliveries + 1, a.counters.lost + 1,
                                     a.counters.first_delivered_at or self.now())
            items.append((a.message, a.queue, a.message.priority, None,
                          {"counters": counters}))
        self._publish_raw(items)
        for a in todo:
            chan.basic_ack(a.tag)

    def _has(self, queues: list[str]) -> bool:
        wanted = set(queues)
        with self._state:
            return any(a.queue in wanted for a in self._arrived)

    def _take(self, queues: list[str], owner: str, limit: int) -> list[Delivery]:
        wanted = set(queues)
        generation = self._con.generation
        now = self.now()
        with self._state:
            ready = sorted((a for a in self._arrived
                            if a.queue in wanted and a.generation == generation),
                           key=lambda a: (a.message.priority, a.seq))[:limit]
            if not ready:
                return []
            taken = {id(a) for a in ready}
            self._arrived = [a for a in self._arrived if id(a) not in taken]
            out = []
            for a in ready:
                server_lost = a.returns if a.returns else (1 if a.redelivered else 0)
                lost = a.counters.lost + server_lost
                deliveries = a.counters.deliveries + server_lost + 1
                first = a.counters.first_delivered_at or now
                token = f"{self._nonce}.{next(self._tokens)}"
                self._leases[token] = _Lease(a, owner, deliveries, lost, first)
                message = a.message
                if deliveries > 1:
                    info = message.properties.get("delivery_info")
                    if isinstance(info, dict):
                        message = message.with_properties(
                            delivery_info={**info, "redelivered": True})
                out.append(Delivery(message=message, queue=a.queue, tag=token, token=token,
                                    owner=owner, redelivered=deliveries > 1,
                                    delivery_count=deliveries, lost_count=lost,
                                    lease_expires=now + self.lease_seconds))
            return out
