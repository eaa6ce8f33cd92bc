"""The slot and unique-claim part of the broker interface (see :class:`SlotMethods`).

:class:`~celeriac.brokers.base.Broker` inherits these methods; brokers that
implement slots override them (each engine's ``slots.py``), the others refuse a
task that needs them with :class:`~celeriac.exceptions.ImproperlyConfigured`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from .base import Delivery


@dataclass(frozen=True)
class SlotHolder:
    """A live holder of a slot (``celeriac status``): which message, whose, until when."""

    name: str
    tag: str
    task_id: str | None
    owner: str | None
    lease_expires: float | None



class SlotMethods:
    """Slots (concurrency limits, ``serial_task``) and unique claims (``unique_for``)."""

    url: str

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
