"""Deliveries kept past RabbitMQ's ``consumer_timeout`` while their worker lives.

RabbitMQ closes a channel whose oldest unacknowledged delivery is older than
``consumer_timeout`` (30 minutes by default; server-wide on 3.10, no per-queue
or per-consumer setting before 3.12) and requeues what it held: a task running
longer would run twice. A client cannot extend a delivery, but it can replace
it. :class:`Holder` (a daemon thread per broker instance and process) does so
for every delivery older than half the ``consumer_timeout`` option (seconds,
default 1800, the server's default; 0 turns it off):

* a **lease** is *rolled over*: a copy carrying its counters is published
  (confirmed) to this process's holding queue
  ``celeriac.held.<queue>.<instance>-<pid>`` and at once taken back from it
  with ``basic.get`` on the consuming channel, then the old delivery is
  acknowledged. The lease keeps its token; only its delivery tag changes, and
  the new delivery is young. The holding queue is durable, dead-letters to the
  task queue (``x-dead-letter-exchange`` ``""``, ``x-dead-letter-routing-key``
  = the queue) and each copy expires (``expiration``) one minute after it was
  published: if the worker dies, RabbitMQ requeues the copy into the holding
  queue, where it has expired, so it goes back to its task queue at once,
  counted as a lost delivery (``x-death`` names the holding queue). The holding
  queue deletes itself when unused for a day (``x-expires``).
* a delivery that **arrived but was never leased** is given back to its queue
  (uncounted), as on close.

Every step runs under the consuming connection's lock: from the worker's own
reading loop when it reads (``receive``), else from the thread (a task runs in
the reading thread: solo, prefork). Like heartbeats, it cannot run while a task
holds the GIL for the whole time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import amqp

from . import wire
from .connection import RETRYABLE_ERRORS, retrying

if TYPE_CHECKING:
    from .broker import AMQPBroker
    from .consuming import _Arrived

logger = logging.getLogger("celeriac.brokers.amqp")

HELD_PREFIX = "celeriac.held."
#: ms a copy waits in a holding queue before it goes back to its task queue
COPY_TTL_MS = 60_000
#: ms a holding queue lives unused
QUEUE_TTL_MS = 86_400_000
DEFAULT_CONSUMER_TIMEOUT = 1800.0
ROLL_ID = wire.ROLL


def consumer_timeout(options: dict[str, Any]) -> float:
    """The ``consumer_timeout`` option in seconds (0: rollover off)."""
    value = options.get("consumer_timeout", DEFAULT_CONSUMER_TIMEOUT)
    return max(0.0, float(value or 0))


def from_holding_queue(headers: dict[str, Any]) -> bool:
    """True for a copy that a dead worker's holding queue dead-lettered back."""
    deaths = headers.get("x-death")
    if not isinstance(deaths, list) or not deaths:
        return False
    first = deaths[0]
    return isinstance(first, dict) and str(first.get("queue") or "").startswith(HELD_PREFIX)


class Holder:
    """The rollover thread of one broker instance in one process."""

    def __init__(self, broker: AMQPBroker, timeout: float) -> None:
        self.broker = broker
        self.timeout = timeout
        self.tick = min(30.0, timeout / 8)
        self.pid = os.getpid()
        self._declared: set[tuple[int, str]] = set()
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="celeriac-amqp-holder",
                                        daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self.pid == os.getpid() and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.tick

    def _run(self) -> None:
        """While the worker reads (a thread pool), its loop does the rollover when due
        (:meth:`check` from ``receive``: a busy loop would starve this thread of the
        lock); while it runs a task (solo, prefork), this thread does it."""
        lock = self.broker._con.lock
        while not self._stop.wait(self.tick / 2):
            if not self.due() or not lock.acquire(timeout=self.tick):
                continue
            try:
                if self.due():
                    self.check()
            except Exception:
                logger.warning("Could not renew RabbitMQ deliveries before consumer_timeout",
                               exc_info=True)
            finally:
                lock.release()

    def held_queue(self, queue: str) -> str:
        return f"{HELD_PREFIX}{queue}.{self.broker._nonce}-{os.getpid()}"

    def check(self) -> None:
        """Roll over the old leases and give back old unleased deliveries (called with
        the consuming connection's lock held)."""
        self._last = time.monotonic()
        b = self.broker
        limit = time.monotonic() - self.timeout / 2
        generation = b._con.generation
        with b._state:
            old_leases = [t for t, lease in b._leases.items()
                          if lease.arrived.received < limit
                          and lease.arrived.generation == generation]
            stale = [a for a in b._arrived if a.received < limit]
            b._arrived = [a for a in b._arrived if a.received >= limit]
        if stale:
            self._give_back(stale)
        for token in old_leases:
            self._roll(token)

    def _give_back(self, stale: list[_Arrived]) -> None:
        """Republish, then ack now: an unacked delivery left for the worker's next read
        (which a long task delays) would close the channel, leases and all."""
        b = self.broker
        b._publish_raw([(a.message, a.queue, a.message.priority, None,
                         {"counters": a.counters}) for a in stale])
        with b._con.lock:
            try:
                if b._con.connected:
                    chan = b._con.channel()
                    for a in stale:
                        if a.generation == b._con.generation:
                            chan.basic_ack(a.tag)
            except RETRYABLE_ERRORS:
                b._con.reset()

    def _roll(self, token: str) -> None:
        b = self.broker
        with b._state:
            lease = b._leases.get(token)
        if lease is None:
            return
        arrived = lease.arrived
        held = self.held_queue(arrived.queue)
        roll_id = uuid.uuid4().hex
        counters = wire.Counters(lease.deliveries - 1, lease.lost, lease.first)

        def publish(chan: amqp.Channel) -> None:
            self._declare(chan, held, arrived.queue)
            msg = wire.encode(arrived.message, arrived.message.priority, counters=counters,
                              extra_headers={ROLL_ID: roll_id})
            msg.properties["expiration"] = str(COPY_TTL_MS)
            b._publish_on(chan, msg, "", held)
            b._wait_confirms(chan)

        retrying(b.url, "rollover", b._pub, publish, b.retry_policy)
        with b._con.lock:
            try:
                if b._con.generation != arrived.generation or not b._con.connected:
                    return  # the connection broke: RabbitMQ requeued the original
                chan = b._con.channel()
                new_tag = self._take_back(chan, held, roll_id)
                if new_tag is None:
                    return
                with b._state:
                    still = b._leases.get(token) is lease
                    if still:
                        old_tag, arrived.tag = arrived.tag, new_tag
                        arrived.received = time.monotonic()
                if still:
                    chan.basic_ack(old_tag)
                else:  # settled meanwhile: the copy is not needed
                    chan.basic_ack(new_tag)
            except RETRYABLE_ERRORS:
                b._con.reset()

    def _take_back(self, chan: amqp.Channel, held: str, roll_id: str) -> int | None:
        """The delivery tag of copy ``roll_id``; stale copies met first are dropped."""
        for _ in range(100):
            got = chan.basic_get(held)
            if got is None:
                return None
            tag = int(got.delivery_info["delivery_tag"])
            headers = got.properties.get("application_headers") or {}
            if headers.get(ROLL_ID) == roll_id:
                return tag
            chan.basic_ack(tag)  # a copy whose original RabbitMQ requeued after a break
        return None

    def _declare(self, chan: amqp.Channel, held: str, queue: str) -> None:
        key = (self.broker._pub.generation, held)
        if key in self._declared:
            return
        chan.queue_declare(held, durable=True, auto_delete=False, arguments={
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue,
            "x-expires": QUEUE_TTL_MS})
        self._declared.add(key)

