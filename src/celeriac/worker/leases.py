"""Lease heartbeats: keep the leases of received messages alive while a worker holds them.

One :class:`LeaseKeeper` per consumer renews, in one batched call every
``interval`` seconds, the leases of every message the consumer holds
(running or buffered). A lease the broker refuses to renew is *lost*: some
other worker may own the message now, so the job must not ack it or write a
result for it (fencing); :meth:`still_owner` tells the tracer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from ..brokers.base import Broker, Delivery

logger = logging.getLogger("celeriac.worker.leases")


class LeaseKeeper:
    """Renews held leases on a background thread."""

    def __init__(self, broker: Broker, interval: float) -> None:
        self.broker = broker
        self.interval = max(0.05, interval)
        self._held: dict[str, Delivery] = {}
        #: tag -> monotonic time the lease surely still runs until (local clock)
        self._until: dict[str, float] = {}
        self._lost: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="celeriac-leases", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def hold(self, deliveries: Iterable[Delivery]) -> None:
        now_mono, now = time.monotonic(), time.time()
        with self._lock:
            for d in deliveries:
                self._held[d.tag] = d
                self._until[d.tag] = now_mono + (d.lease_expires - now if d.lease_expires
                                                 else 0.0)

    def drop(self, delivery: Delivery) -> None:
        with self._lock:
            self._held.pop(delivery.tag, None)
            self._until.pop(delivery.tag, None)
            self._lost.discard(delivery.tag)

    def held(self) -> list[Delivery]:
        with self._lock:
            return list(self._held.values())

    def still_owner(self, delivery: Delivery) -> bool:
        """True if the lease is surely ours: locally known to run for at least half a lease
        more, else confirmed by renewing it (one round trip)."""
        margin = self.broker.lease_seconds / 2
        with self._lock:
            if delivery.tag in self._lost:
                return False
            if self._until.get(delivery.tag, 0.0) - time.monotonic() > margin:
                return True
        started = time.monotonic()
        ok = self.broker.renew([delivery])
        if not ok or not ok[0]:
            self._mark_lost([delivery])
            return False
        self._extend([delivery], started)
        return True

    def _extend(self, deliveries: list[Delivery], started: float) -> None:
        until = started + self.broker.lease_seconds
        with self._lock:
            for d in deliveries:
                if d.tag in self._held:
                    self._until[d.tag] = until

    def renew_now(self) -> None:
        held = self.held()
        if not held:
            return
        started = time.monotonic()
        try:
            results = self.broker.renew(held)
        except Exception:
            logger.exception("Lease renewal failed; will retry")
            return
        self._mark_lost([d for d, ok in zip(held, results, strict=False) if not ok])
        self._extend([d for d, ok in zip(held, results, strict=False) if ok], started)

    def _mark_lost(self, lost: list[Delivery]) -> None:
        with self._lock:
            for d in lost:
                if d.tag in self._held and d.tag not in self._lost:
                    self._lost.add(d.tag)
                    logger.warning("Lease lost for %s[%s]: another worker may run it now",
                                   d.message.task_name, d.message.task_id)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.renew_now()
