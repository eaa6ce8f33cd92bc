"""Slots and unique claims of the PostgreSQL broker (see :meth:`Broker.acquire_slot`).

Tables ``<schema>.slots`` and ``<schema>.unique_claims`` (``migrations/0004_slots.sql``);
statements ``slot_*`` and ``unique_*`` in ``queries.sql``. Acquiring takes a
transaction-scoped advisory lock on the slot's name (``slot_lock``), then one
statement (``slot_acquire``) forgets holders whose message is no longer leased under
their token, counts the live ones and inserts the new holder: two workers on two
hosts never both take the last place, and an acknowledged message or a lapsed lease
(a killed worker) frees its place with nothing to clean up.
"""

from __future__ import annotations

from typing import Any

from ..base import Delivery
from ..slotting import SlotHolder


class PostgresSlots:
    """Mixed into :class:`~celeriac.brokers.postgres.broker.PostgresBroker`."""

    schema: str
    db: Any
    retry_policy: Any
    _run: Any

    def acquire_slot(self, name: str, limit: int, delivery: Delivery) -> bool:
        if not delivery.tag.isdigit():
            return False
        sql = self.db.sql
        params = {"name": name, "limit": int(limit),
                  "id": int(delivery.tag), "token": delivery.token,
                  "task_id": delivery.message.task_id}

        def work(conn: Any) -> bool:
            with conn.transaction():
                conn.execute(sql["slot_lock"], params)
                row = conn.execute(sql["slot_acquire"], params).fetchone()
            return bool(row and row[0])

        return bool(self.db.run(work, policy=self.retry_policy, what="slot_acquire"))

    def release_slot(self, name: str, delivery: Delivery) -> bool:
        [(count,)] = self._run("slot_release", {"name": name, "token": delivery.token})
        return bool(count)

    def slot_holders(self, name: str | None = None) -> list[SlotHolder]:
        rows = self._run("slot_holders", {"name": name})
        return [SlotHolder(r[0], str(r[1]), r[2], r[3], r[4]) for r in rows]

    def claim_unique(self, key: str, value: str, seconds: float) -> str | None:
        params = {"key": key, "value": value, "seconds": float(seconds)}
        for _ in range(3):
            [(claimed, held)] = self._run("unique_claim", params)
            if claimed:
                return None
            if held is not None:
                return str(held)
            # a claim committed by another client after this statement's snapshot:
            # read again
        [(claimed, held)] = self._run("unique_claim", params)
        return None if claimed else (str(held) if held is not None else value)

    def release_unique(self, key: str, value: str) -> bool:
        [(count,)] = self._run("unique_release", {"key": key, "value": value})
        return bool(count)
