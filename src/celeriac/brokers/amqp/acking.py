"""Acknowledging RabbitMQ deliveries: leases popped, acks and rejects queued and sent.

:class:`Acking` is mixed into :class:`~.consuming.Consuming`. Acks and rejects
are queued under the state lock and sent by whichever thread holds the
connection: in one socket write on TCP, with one ``multiple`` ack below every
delivery still unsettled. A lease is bound to the connection generation that
carried it: after a reconnect (or a channel the server closed) its ack is void,
because RabbitMQ has requeued the message.

**Deferred acks.** A worker's loop that still has work in hand acks what
finished and leases more in one ``ack_and_receive`` call with no wait (a prefork
child or solo worker tops up one or two messages after every task). Those acks
are not written at once: they wait for the loop's next read of the socket (when
nothing it can lease has arrived), until :data:`ACK_BATCH` are due, or
:data:`ACK_DELAY` seconds (then :class:`AckTimer`, a daemon thread of the
process, sends them while the loop runs a task). RabbitMQ then settles many
deliveries with one ``multiple`` ack and pushes as many new ones in one burst,
instead of a round trip per task. ``ack`` (and ``ack_and_receive`` with a
wait, ``close``) write everything due at once. The result is stored before the
ack is queued, as before; a worker killed meanwhile runs those tasks again.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import amqp
from amqp import exceptions as amqp_errors

from ..base import Delivery
from . import frames, reading
from .connection import RETRYABLE_ERRORS, Link

if TYPE_CHECKING:
    from .consuming import _Arrived, _Lease

logger = logging.getLogger("celeriac.brokers.amqp")

#: deferred acks are written once this many are due
ACK_BATCH = 16
#: ... or once the oldest has waited this long (seconds)
ACK_DELAY = 0.05


class Acking:
    """Leases and the acknowledgements of one broker instance."""

    _con: Link
    _state: threading.Lock
    _arrived: list[_Arrived]
    _leases: dict[str, _Lease]
    _recount: list[_Arrived]
    _pending_acks: list[tuple[int, int]]
    _pending_rejects: set[tuple[int, int]]
    _nonce: str
    #: when the oldest deferred ack was queued (monotonic; None: none waits)
    _deferred_at: float | None = None
    _ack_timer: AckTimer | None = None

    def lease_alive(self, delivery: Delivery) -> bool:
        """False once the connection that carried ``delivery`` is gone (RabbitMQ requeued
        the message then: running it here too would run it twice)."""
        with self._state:
            lease = self._leases.get(delivery.token)
        return lease is not None and lease.arrived.generation == self._con.generation

    def _pop_leases(self, deliveries: Sequence[Delivery]) -> list[_Lease]:
        generation = self._con.generation
        out = []
        with self._state:
            for d in deliveries:
                lease = self._leases.get(d.token)
                if lease is None:
                    continue
                del self._leases[d.token]
                if lease.arrived.generation == generation:
                    out.append(lease)
        return out

    def _queue_acks(self, leases: Sequence[_Lease], *, reject: bool = False) -> int:
        """Ack ``leases`` (``reject``: ``basic.reject`` them without requeue, so RabbitMQ
        dead-letters them through their queue's dead-letter exchange). Returns how many
        were sent on a channel still open (or left to the consuming loop if it held the
        connection for 2 s): those of a channel the server closed are not counted."""
        with self._state:
            self._pending_acks.extend((lease.arrived.generation, lease.arrived.tag)
                                      for lease in leases)
            if reject:
                self._pending_rejects.update((lease.arrived.generation, lease.arrived.tag)
                                             for lease in leases)
        self._send_pending()
        generation = self._con.generation
        return sum(1 for lease in leases if lease.arrived.generation == generation)

    def _defer_acks(self, leases: Sequence[_Lease]) -> int:
        """Queue acks of ``leases`` for a later write (see the module docstring): now when
        :data:`ACK_BATCH` are due. Returns how many belong to the live connection."""
        with self._state:
            self._pending_acks.extend((lease.arrived.generation, lease.arrived.tag)
                                      for lease in leases)
            waiting = len(self._pending_acks)
            due = waiting >= ACK_BATCH or waiting * 4 >= len(self._leases)
            if self._deferred_at is None:
                self._deferred_at = time.monotonic()
        if due:
            self._send_pending()
        else:
            timer = self._ack_timer
            if timer is None or not timer.alive():
                timer = self._ack_timer = AckTimer(self)
            timer.nudge()
        generation = self._con.generation
        return sum(1 for lease in leases if lease.arrived.generation == generation)

    def _deferring(self) -> bool:
        """True while deferred acks wait and are not yet due (a read with no wait is skipped
        then: the window RabbitMQ may fill is full of this process's leases)."""
        since = self._deferred_at
        return since is not None and time.monotonic() - since < ACK_DELAY

    def _send_stale(self) -> float | None:
        """Write the deferred acks if the oldest has waited :data:`ACK_DELAY`; else how long
        until it has (None: nothing waits)."""
        since = self._deferred_at
        if since is None:
            return None
        left = since + ACK_DELAY - time.monotonic()
        if left > 0:
            return left
        self._send_pending()
        with self._state:
            if self._deferred_at == since:  # not sent (no connection): the next read sends
                self._deferred_at = None    # them, the next deferred ack wakes the timer
        return None

    def _send_pending(self) -> None:
        """Write the queued acks and rejects, reading first what the server sent."""
        if self._con.lock.acquire(timeout=2.0):  # a receive holds it for at most ~1 s
            try:
                if self._con.connected:
                    chan = self._con.channel()
                    # a close the server sent meanwhile (consumer_timeout, a refused
                    # method) is read before the acks go out: they would act on nothing
                    reading.drain(chan.connection, 0.0)
                    self._flush_acks(chan)
            except (*RETRYABLE_ERRORS, amqp_errors.IrrecoverableChannelError) as exc:
                # an outage is reported by the worker's watch; a channel closed on purpose
                (logger.debug if isinstance(exc, RETRYABLE_ERRORS) else logger.warning)(
                    "RabbitMQ closed the consuming channel (%s): what it held was "
                    "requeued, its acknowledgements are void", exc)
                self._con.reset()  # a new generation: the old leases are void
            finally:
                self._con.lock.release()

    def _flush_acks(self, chan: amqp.Channel) -> None:
        """Send the queued acks and rejects of this generation (:func:`.frames.settle`:
        one write, one ``multiple`` ack below every delivery still unsettled)."""
        generation = self._con.generation
        with self._state:
            acks, self._pending_acks = self._pending_acks, []
            rejects, self._pending_rejects = self._pending_rejects, set()
            self._deferred_at = None
            held = [a.tag for a in itertools.chain(
                self._arrived, self._recount, (lease.arrived for lease in self._leases.values()))
                if a.generation == generation] if acks else []
        tags = [tag for gen, tag in acks if gen == generation]
        reject = {tag for gen, tag in rejects if gen == generation}
        if tags:
            frames.settle(chan, [t for t in tags if t not in reject],
                          [t for t in tags if t in reject], min([*held, *reject], default=None))

    def ack(self, deliveries: Sequence[Delivery]) -> int:
        leases = self._pop_leases(deliveries)
        return self._queue_acks(leases) if leases else 0

    def renew(self, deliveries: Sequence[Delivery], seconds: float | None = None) -> list[bool]:
        generation = self._con.generation
        out = []
        with self._state:
            for d in deliveries:
                lease = self._leases.get(d.token)
                if lease is not None:
                    out.append(lease.arrived.generation == generation and self._con.connected)
                else:
                    # another process's lease: it lasts while that process's connection does
                    out.append(not d.token.startswith(self._nonce + "."))
        return out


class AckTimer:
    """Writes deferred acks that waited :data:`ACK_DELAY` while the worker's loop ran a task
    (a daemon thread per broker instance and process, woken by the first ack deferred)."""

    def __init__(self, acking: Acking) -> None:
        self.acking = acking
        self.pid = os.getpid()
        self._idle = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="celeriac-amqp-acks",
                                        daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self.pid == os.getpid() and self._thread.is_alive()

    def nudge(self) -> None:
        """Acks were deferred: wake the thread unless it is already watching them."""
        if self._idle:
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._idle = True
            if self.acking._deferred_at is None:  # checked after idle is set: no lost nudge
                self._wake.wait()
            self._wake.clear()
            self._idle = False
            try:
                left = self.acking._send_stale()
                while left is not None:
                    time.sleep(left)
                    left = self.acking._send_stale()
            except Exception:  # the next read or ack sends them; the loop reports outages
                logger.debug("Could not send deferred RabbitMQ acks", exc_info=True)
