"""Acknowledging RabbitMQ deliveries: leases popped, acks and rejects queued and sent.

:class:`Acking` is mixed into :class:`~.consuming.Consuming`. Acks and rejects
are queued under the state lock and sent by whichever thread holds the
connection: in one socket write on TCP, with one ``multiple`` ack below every
delivery still unsettled. A lease is bound to the connection generation that
carried it: after a reconnect (or a channel the server closed) its ack is void,
because RabbitMQ has requeued the message.
"""

from __future__ import annotations

import itertools
import logging
import threading
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
        generation = self._con.generation
        return sum(1 for lease in leases if lease.arrived.generation == generation)

    def _flush_acks(self, chan: amqp.Channel) -> None:
        """Send the queued acks and rejects of this generation (:func:`.frames.settle`:
        one write, one ``multiple`` ack below every delivery still unsettled)."""
        generation = self._con.generation
        with self._state:
            acks, self._pending_acks = self._pending_acks, []
            rejects, self._pending_rejects = self._pending_rejects, set()
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
