"""The consumer loop: lease only what free slots can run, hand jobs to the pool.

One consumer per process (per child under prefork). It asks the broker for at
most ``free slots + prefetch`` messages, keeps their leases alive with a
:class:`~celeriac.worker.leases.LeaseKeeper`, checks revocations for the
whole batch in one result-store read, and on stop releases every message it
holds but has not started, so shutdown loses nothing and runs nothing twice.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import threading
from typing import TYPE_CHECKING

from .. import states
from ..brokers.base import Delivery
from .job import Job, JobRunner, Limits, Monitor
from .leases import LeaseKeeper
from .limits import ThreadLimits
from .pools import SoloPool, ThreadPool

if TYPE_CHECKING:
    from ..app.base import Celery

logger = logging.getLogger("celeriac.worker")


def default_hostname() -> str:
    return f"celery@{socket.gethostname()}"


def revoked_ids(app: Celery, batch: list[Delivery]) -> set[str]:
    """Ids in ``batch`` revoked in the result store (one batched read)."""
    backend = app.backend
    ids = [d.message.task_id for d in batch if d.message.task_id]
    if backend is None or not ids:
        return set()
    try:
        metas = backend.get_many(ids)
    except Exception:
        logger.exception("Could not read revocations")
        return set()
    return {tid for tid, meta in metas.items() if meta.get("status") == states.REVOKED}


class Consumer:
    """Fetches deliveries for a pool until told to stop."""

    def __init__(self, app: Celery, queues: list[str], pool: SoloPool | ThreadPool, *,
                 hostname: str | None = None, prefetch: int = 0,
                 poll_timeout: float = 1.0, owner: str | None = None,
                 limits: Limits | None = None, hard_in_process: bool = True,
                 monitor: Monitor | None = None) -> None:
        self.app = app
        self.queues = queues
        self.pool = pool
        self.hostname = hostname or default_hostname()
        self.owner = owner or f"{self.hostname}:{os.getpid()}:{id(self):x}"
        self.prefetch = max(0, prefetch)
        self.poll_timeout = poll_timeout
        self.broker = app.broker
        lease = float(app.conf.worker_lease_seconds)
        interval = app.conf.worker_heartbeat_interval or lease / 3
        self.keeper = LeaseKeeper(self.broker, float(interval))
        self.monitor = monitor or Monitor()
        self.runner = JobRunner(app, self.keeper, self.hostname,
                                limits if limits is not None else ThreadLimits(),
                                hard_in_process=hard_in_process, monitor=self.monitor)
        self.runner.batch_acks = True
        # only pays off when several results are stored per loop turn (prefetch)
        self.runner.batch_results = isinstance(pool, SoloPool) and self.prefetch > 0
        self.buffer: collections.deque[Job] = collections.deque()
        self.stopping = threading.Event()

    def run(self) -> None:
        """Consume until :meth:`stop`; then settle what was fetched but not started."""
        self.keeper.start()
        try:
            while not self.stopping.is_set():
                self._fill()
                self._dispatch()
        finally:
            self._flush_acks()
            self._release_buffer()
            self.keeper.stop()

    def stop(self) -> None:
        self.stopping.set()

    def _flush_results(self) -> bool:
        """Store batched results; False (acks must wait) if the store failed."""
        try:
            self.runner.results.flush()
            return True
        except Exception:
            logger.exception("Storing results failed; retrying before acknowledging")
            return False

    def _flush_acks(self) -> None:
        if not self._flush_results():
            return
        try:
            self.runner.acks.flush()
        except Exception:
            logger.exception("Acknowledging finished tasks failed; their leases will lapse "
                             "and they may run again")

    def _fill(self) -> None:
        free = self.pool.free_slots()
        want = free + self.prefetch - len(self.buffer)
        if want <= 0:
            self._flush_acks()
            self.pool.wait_for_slot(0.2)
            return
        timeout = 0.0 if self.buffer else self.poll_timeout
        if not self._flush_results():
            self.stopping.wait(1.0)
            return
        acks = self.runner.acks.take()
        try:  # settle what finished and lease more in one round trip where the broker can
            done, batch = self.broker.ack_and_receive(acks, self.queues, owner=self.owner,
                                                      limit=want, timeout=timeout)
        except Exception:
            self.runner.acks.restore(acks)
            logger.exception("Receiving from %s failed; retrying", self.broker.url)
            self.stopping.wait(1.0)
            return
        self.runner.acks.settled(acks, done)
        self.monitor.received(len(batch))
        if not batch:
            return
        self.keeper.hold(batch)
        revoked = revoked_ids(self.app, batch)
        for delivery in batch:
            job = self._prepare(delivery, revoked)
            if job is not None:
                self.buffer.append(job)

    def _prepare(self, delivery: Delivery, revoked: set[str]) -> Job | None:
        try:
            return self.runner.prepare(delivery, revoked)
        except Exception:
            logger.exception("Could not prepare message %s; releasing it",
                             delivery.message.task_id)
            self.broker.release(delivery, not_before=None)
            self.keeper.drop(delivery)
            return None

    def _dispatch(self) -> None:
        while self.buffer and self.pool.free_slots() > 0 and not self.stopping.is_set():
            job = self.buffer.popleft()
            self.pool.submit(lambda job=job: self._execute(job))  # type: ignore[misc]

    def _execute(self, job: Job) -> None:
        try:
            self.runner.execute(job)
        except BaseException as exc:
            if isinstance(exc, Exception):
                logger.exception("Internal error running %s[%s]; releasing the message",
                                 job.call.name, job.call.id)
            self.broker.release(job.delivery)
            self.keeper.drop(job.delivery)
            if not isinstance(exc, Exception):
                raise  # shutdown: the consumer loop ends

    def _release_buffer(self) -> None:
        while self.buffer:
            job = self.buffer.popleft()
            self.broker.release(job.delivery)
            self.keeper.drop(job.delivery)

    def release_running(self) -> int:
        """Cold shutdown: give back the messages of jobs still running."""
        self._flush_acks()
        held = self.keeper.held()
        for delivery in held:
            self.broker.release(delivery)
            self.keeper.drop(delivery)
        return len(held)
