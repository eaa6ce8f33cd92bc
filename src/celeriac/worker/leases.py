"""The leases one consumer holds: fencing checks here, renewal by a process that runs no task.

:class:`LeaseKeeper` is the consumer's book of held deliveries (running and
prefetched). It answers :meth:`LeaseKeeper.still_owner` before a result is
written or a message settled (fencing) and tells a *renewal* what to renew.
Leases must not depend on the task's GIL: a task that holds it (a long C-level
regex, a big ``json.loads``) would stop a heartbeat thread in its own process.
So renewals come from outside the process that runs tasks:

* :class:`SupervisorRenewal` (prefork children): the child sends what it holds
  and drops to the supervisor, which renews the leases of every child in one
  batched call per heartbeat (:class:`~celeriac.worker.renewer.Renewer`);
* :class:`~celeriac.worker.renewer.ProcessRenewal` (solo, threads, asyncio):
  a small renewer process, fed through a pipe, does the same for one worker;
* :class:`ThreadRenewal`: a thread in the consumer's process, for the
  in-process ``memory://`` broker (whose leases no other process can reach)
  and for tests.

A renewer renews only while the owner process lives and is not stopped
(``SIGSTOP``, a frozen container): a paused worker's leases lapse and its
messages go to another worker, which is what fencing then protects.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from multiprocessing.connection import Connection
from typing import Any, Protocol

from ..brokers.base import Broker, Delivery
from ..messages import Message

logger = logging.getLogger("celeriac.worker.leases")


#: a lease as a renewer keeps it: (tag, token, queue, owner, task id, task name); plain
#: tuples, because they cross a pipe once per consumer loop turn
Lease = tuple[str, str, str, str, Any, Any]


def lease_of(delivery: Delivery) -> Lease:
    message = delivery.message
    return (delivery.tag, delivery.token, delivery.queue, delivery.owner, message.task_id,
            message.task_name)


def delivery_of(lease: Lease) -> Delivery:
    """A body-less delivery for ``lease``: enough to renew, acknowledge or release it."""
    tag, token, queue, owner, task_id, name = lease
    return Delivery(message=Message(headers={"id": task_id, "task": name}, properties={},
                                    body=b""), queue=queue, tag=tag, token=token, owner=owner)


class Renewal(Protocol):
    """How a :class:`LeaseKeeper`'s leases are renewed."""

    def start(self, keeper: LeaseKeeper) -> None: ...

    def update(self, held: list[Delivery], dropped: list[Delivery]) -> None: ...

    def stop(self) -> None: ...


def update_frame(held: list[Delivery], dropped: list[Delivery]) -> tuple[Any, ...]:
    """What a renewer is told: new leases and settled ones (tag, token)."""
    return ("update", [lease_of(d) for d in held], [(d.tag, d.token) for d in dropped])


class ThreadRenewal:
    """Renews from a thread of the consumer's own process (``memory://``, tests)."""

    def __init__(self, interval: float) -> None:
        self.interval = max(0.05, interval)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, keeper: LeaseKeeper) -> None:
        def loop() -> None:
            while not self._stop.wait(self.interval):
                keeper.renew_now()

        self._thread = threading.Thread(target=loop, name="celeriac-leases", daemon=True)
        self._thread.start()

    def update(self, held: list[Delivery], dropped: list[Delivery]) -> None:
        """The keeper's own book is what this thread renews."""

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class SupervisorRenewal:
    """A prefork child's leases, renewed by its supervisor (told over the child's pipe)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def start(self, keeper: LeaseKeeper) -> None:
        """The supervisor renews; nothing runs here."""

    def send(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            try:
                self.conn.send(message)
            except (OSError, ValueError):  # the supervisor is gone: the child stops soon
                logger.debug("Could not tell the supervisor %r", message[0])

    def update(self, held: list[Delivery], dropped: list[Delivery]) -> None:
        self.send(update_frame(held, dropped))

    def stop(self) -> None:
        """Nothing to stop: the supervisor forgets a child's leases when it exits."""


class LeaseKeeper:
    """The deliveries one consumer holds, and whether their leases are still its own.

    What it starts and stops holding reaches the renewal at :meth:`sync`, which the
    consumer calls once per loop turn, before it starts any job it received: one
    message per turn, not two per task.
    """

    def __init__(self, broker: Broker, interval: float, renewal: Renewal | None = None) -> None:
        self.broker = broker
        self.interval = max(0.05, interval)
        self.renewal: Renewal = renewal if renewal is not None else ThreadRenewal(interval)
        self._held: dict[str, Delivery] = {}
        #: tag -> monotonic time the lease surely still runs until (local clock)
        self._until: dict[str, float] = {}
        self._lost: set[str] = set()
        self._new: list[Delivery] = []
        self._gone: list[Delivery] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        self.renewal.start(self)

    def stop(self) -> None:
        self.renewal.stop()

    def hold(self, deliveries: Iterable[Delivery]) -> None:
        batch = list(deliveries)
        now_mono, now = time.monotonic(), time.time()
        with self._lock:
            for d in batch:
                self._held[d.tag] = d
                self._until[d.tag] = now_mono + (d.lease_expires - now if d.lease_expires
                                                 else 0.0)
            self._new.extend(batch)

    def drop(self, delivery: Delivery) -> None:
        with self._lock:
            known = self._held.pop(delivery.tag, None)
            self._until.pop(delivery.tag, None)
            self._lost.discard(delivery.tag)
            if known is not None:
                self._gone.append(known)

    def sync(self) -> None:
        """Tell the renewal what was held and dropped since the last call."""
        with self._lock:
            new, gone = self._new, self._gone
            if not new and not gone:
                return
            self._new, self._gone = [], []
        self.renewal.update(new, gone)

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
        """Renew every held lease in one call (the in-process :class:`ThreadRenewal`)."""
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
