"""The consumer loop: lease only what free slots can run, hand jobs to the pool.

One consumer per worker process (per child under prefork), the same loop for
every pool (solo, threads, asyncio; the pool decides only how a job runs). It
asks the broker for at most ``free slots + prefetch`` messages (acknowledging
what finished in the same call), tells its
:class:`~celeriac.worker.leases.LeaseKeeper` what it holds (the leases are
renewed by a process that runs no task), and checks revocations: for a whole
received batch in one result-store read, again right before a job that waited
starts, and every second for the jobs running (``terminate=True``). On stop it
releases every message it holds but has not started, so shutdown loses nothing
and runs nothing twice. A message whose checks fail with an internal error is
given back as a failed delivery (counted), never in a loop.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from ..app.control import signal_number
from ..brokers.base import Delivery
from .job import Job, JobRunner
from .leases import LeaseKeeper, Renewal
from .limits import ThreadLimits
from .monitor import Limits, Monitor
from .pools import SoloPool
from .taskevents import TaskEvents

if TYPE_CHECKING:
    from ..app.base import Celery

logger = logging.getLogger("celeriac.worker")


def default_hostname() -> str:
    return f"celery@{socket.gethostname()}"


class Pool(Protocol):
    """What the consumer needs from a pool (see :mod:`.pools` and :mod:`.aio`)."""

    name: str
    concurrency: int
    #: True when ``submit`` runs the job on the calling (consumer) thread
    inline: bool

    def start(self, runner: JobRunner) -> None: ...

    def free_slots(self) -> int: ...

    def running(self) -> int: ...

    def submit(self, job: Job) -> None: ...

    def wait_for_slot(self, timeout: float) -> None: ...

    def join(self, timeout: float | None) -> bool: ...

    def terminate(self, job: Job, signum: int) -> bool: ...

    def cancel(self, timeout: float) -> None: ...

    def shutdown(self) -> None: ...


class Consumer:
    """Fetches deliveries for a pool until told to stop."""

    def __init__(self, app: Celery, queues: list[str], pool: Any, *,
                 hostname: str | None = None, prefetch: int = 0,
                 poll_timeout: float = 1.0, owner: str | None = None,
                 limits: Limits | None = None, hard_in_process: bool = True,
                 monitor: Monitor | None = None, renewal: Renewal | None = None,
                 events: TaskEvents | None = None) -> None:
        self.app = app
        self.queues = queues
        self.pool: Pool = pool
        self.hostname = hostname or default_hostname()
        self.owner = owner or f"{self.hostname}:{os.getpid()}:{id(self):x}"
        self.prefetch = max(0, prefetch)
        self.poll_timeout = poll_timeout
        self.broker = app.broker
        lease = float(app.conf.worker_lease_seconds)
        interval = app.conf.worker_heartbeat_interval or lease / 3
        self.keeper = LeaseKeeper(self.broker, float(interval), renewal)
        self.monitor = monitor or Monitor()
        self.runner = JobRunner(app, self.keeper, self.hostname,
                                limits if limits is not None else ThreadLimits(),
                                hard_in_process=hard_in_process, monitor=self.monitor)
        self.runner.events = events or TaskEvents(app, self.hostname)
        self.runner.batch_acks = True
        self.runner.consumer = self
        # only pays off when several results are stored per loop turn (prefetch)
        self.runner.batch_results = isinstance(pool, SoloPool) and self.prefetch > 0
        self.revocations = self.runner.revocations
        self.buffer: collections.deque[Job] = collections.deque()
        self.stopping = threading.Event()
        pool.start(self.runner)

    def run(self) -> None:
        """Consume until :meth:`stop`; then settle what was fetched but not started."""
        self.keeper.start()
        try:
            while not self.stopping.is_set():
                self._fill()
                self._dispatch()
                self._watch_running()
        finally:
            self._flush_acks()
            self._release_buffer()
            self.keeper.stop()

    def stop(self) -> None:
        self.stopping.set()

    # -- revocation ---------------------------------------------------------------------
    def revoke(self, ids: Iterable[str], *, terminate: bool = False, signal: Any = None) -> None:
        """Revoke ``ids`` in this process: never start them; with ``terminate`` stop those
        running (the worker-side entry point, see :meth:`Worker.revoke`)."""
        ids = list(ids)
        self.revocations.note(ids, terminate, signal)
        if terminate:
            signum = signal_number(signal)
            for task_id in ids:
                self.terminate(task_id, signum)

    def terminate(self, task_id: str, signum: int) -> None:
        job = self.runner.active.get(task_id)
        if job is None or job.terminated is not None:
            return
        job.terminated = signum
        if self.pool.terminate(job, signum):
            logger.warning("Terminating task %s[%s] (revoked)", job.name, task_id)
        else:
            logger.warning("revoke(terminate=True): task %s[%s] runs on a thread of the %s "
                           "pool and cannot be stopped; it runs to its end and its result is "
                           "not stored (the task stays REVOKED)", job.name, task_id,
                           self.pool.name)

    def _watch_running(self) -> None:
        """Every second while jobs run: stop those revoked with ``terminate=True``."""
        if not self.runner.active or not self.revocations.poll_due():
            return
        for task_id, signum in self.revocations.terminations(self.runner.running()).items():
            self.terminate(task_id, signum)

    # -- receiving ------------------------------------------------------------------------
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
        if batch:
            self.keeper.hold(batch)
            revoked = self.revocations.revoked(d.message.task_id or "" for d in batch)
            for delivery in batch:
                job = self._prepare(delivery, revoked)
                if job is not None:
                    self.buffer.append(job)
        self.keeper.sync()  # the renewer knows every lease before a job of them starts

    def _prepare(self, delivery: Delivery, revoked: set[str]) -> Job | None:
        try:
            return self.runner.prepare(delivery, revoked)
        except Exception:
            logger.exception("Could not prepare message %s; releasing it (counted as a "
                             "failed delivery)", delivery.message.task_id)
            self._give_back(delivery, failed=True)
            return None

    def _give_back(self, delivery: Delivery, *, failed: bool) -> None:
        try:
            self.broker.release(delivery, failed=failed)
        except Exception:
            logger.exception("Could not give message %s back; its lease will lapse",
                             delivery.message.task_id)
        finally:
            self.keeper.drop(delivery)

    # -- dispatching ----------------------------------------------------------------------
    def _dispatch(self) -> None:
        while self.buffer and self.pool.free_slots() > 0 and not self.stopping.is_set():
            if not self.buffer[0].fresh:
                self._recheck_waiting()
                if not self.buffer:
                    return
            self.pool.submit(self.buffer.popleft())
            if self.pool.inline:  # a job ran on this thread: the others waited for it
                self._waited()
        self._waited()  # what is left waits for a free slot

    def _waited(self) -> None:
        for job in self.buffer:
            job.fresh = False

    def _recheck_waiting(self) -> None:
        """Check revocations again for buffered jobs that waited (prefetched, or behind an
        inline job): a revoke may have come meanwhile (one read for all of them)."""
        stale = [job for job in self.buffer if not job.fresh]
        revoked = self.revocations.revoked(job.id for job in stale)
        for job in stale:
            job.fresh = True
        if revoked:
            for job in [j for j in self.buffer if j.id in revoked]:
                self.buffer.remove(job)
                self.runner.discard_revoked(job.delivery, job.request)

    def _release_buffer(self) -> None:
        while self.buffer:
            self._give_back(self.buffer.popleft().delivery, failed=False)

    def release_running(self) -> int:
        """Cold shutdown: give back the messages of jobs still running."""
        self._flush_acks()
        held = self.keeper.held()
        for delivery in held:
            self._give_back(delivery, failed=False)
        return len(held)
