"""Slots and unique claims of the in-memory broker (see :meth:`Broker.acquire_slot`).

``_slots`` maps a slot name to its holders (message id -> lease token, task id);
a holder counts only while that message is leased under that token and the lease
has not lapsed, checked under the broker's lock whenever the slot is read, so an
acknowledged, released or lapsed message frees its place with nothing to clean.
``_uniques`` maps a claimed key to ``(value, expiry)``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ..base import Delivery
from ..slotting import SlotHolder

LEASED = "leased"


class MemorySlots:
    """Mixed into :class:`~celeriac.brokers.memory.broker.MemoryBroker`."""

    now: Callable[[], float]

    _lock: threading.Lock
    _entries: dict[int, Any]

    def _slot_book(self) -> dict[str, dict[int, tuple[str, str | None]]]:
        book: dict[str, dict[int, tuple[str, str | None]]] | None = \
            self.__dict__.get("_slots")
        if book is None:
            book = self.__dict__["_slots"] = {}
        return book

    def _live(self, tag: int, token: str, now: float) -> Any:
        entry = self._entries.get(tag)
        if entry is None or entry.state != LEASED or entry.token != token \
                or entry.lease_expires < now:
            return None
        return entry

    def _holders(self, name: str, now: float) -> dict[int, tuple[str, str | None]]:
        """The live holders of ``name`` (lock held); dead ones are forgotten."""
        holders = self._slot_book().setdefault(name, {})
        for tag, (token, _) in list(holders.items()):
            if self._live(tag, token, now) is None:
                del holders[tag]
        return holders

    def acquire_slot(self, name: str, limit: int, delivery: Delivery) -> bool:
        tag = int(delivery.tag)
        with self._lock:
            now = time.monotonic()  # the memory broker's leases run on the monotonic clock
            holders = self._holders(name, now)
            if tag in holders:
                return holders[tag][0] == delivery.token
            if len(holders) >= limit or self._live(tag, delivery.token, now) is None:
                return False
            holders[tag] = (delivery.token, delivery.message.task_id)
            return True

    def release_slot(self, name: str, delivery: Delivery) -> bool:
        with self._lock:
            holders = self._slot_book().get(name, {})
            held = holders.get(int(delivery.tag))
            if held is None or held[0] != delivery.token:
                return False
            del holders[int(delivery.tag)]
            return True

    def slot_holders(self, name: str | None = None) -> list[SlotHolder]:
        out: list[SlotHolder] = []
        with self._lock:
            now = time.monotonic()
            names = [name] if name is not None else sorted(self._slot_book())
            for slot in names:
                for tag, (token, task_id) in sorted(self._holders(slot, now).items()):
                    entry = self._live(tag, token, now)
                    out.append(SlotHolder(slot, str(tag), task_id, entry.owner,
                                          self.now() + entry.lease_expires - now))
                if not self._slot_book().get(slot):
                    self._slot_book().pop(slot, None)
        return out

    def _unique_book(self) -> dict[str, tuple[str, float]]:
        book: dict[str, tuple[str, float]] | None = self.__dict__.get("_uniques")
        if book is None:
            book = self.__dict__["_uniques"] = {}
        return book

    def claim_unique(self, key: str, value: str, seconds: float) -> str | None:
        with self._lock:
            now, book = self.now(), self._unique_book()
            held = book.get(key)
            if held is not None and held[1] > now:
                return held[0]
            if len(book) >= 1024:  # forget windows that ended, now and then
                for gone in [k for k, (_, until) in book.items() if until <= now]:
                    del book[gone]
            book[key] = (value, now + float(seconds))
            return None

    def release_unique(self, key: str, value: str) -> bool:
        with self._lock:
            book = self._unique_book()
            held = book.get(key)
            if held is None or held[0] != value or held[1] <= self.now():
                return False
            del book[key]
            return True
