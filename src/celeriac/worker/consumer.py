"""The consumer loop: lease only what free slots can run, hand jobs to the pool.

One consumer per worker process (per child under prefork), the same loop for every
pool (solo, threads, asyncio; the pool decides only how a job runs). It asks the
broker for at most ``free slots + extra`` messages, the extra decided by the
prefetch rule (:mod:`.prefetch`: adaptive from recent run times by default, fixed
when ``worker_prefetch_multiplier`` is set), acknowledging what finished in the
same call. Before its first receive it declares its queues on the broker
(:mod:`.readiness`: the worker says ready after that). It tells its
:class:`~celeriac.worker.leases.LeaseKeeper` what it holds (the leases are renewed
by a process that runs no task), and checks revocations: for a whole received
batch in one result-store read, again right before a job that waited starts, and
every second for the jobs running (``terminate=True``,
:class:`~.revocation.RevokingConsumer`). On stop it releases every message it
holds but has not started, so shutdown loses nothing and runs nothing twice; under
the adaptive rule it also gives back what waits behind tasks that kept every slot
busy for longer than the budget.

Batched results are always stored before the acknowledgements of their
messages go out: :meth:`Consumer._settled` takes the pending acknowledgements
first, then stores every pending result (each result is added before its
acknowledgement), under one lock. Where jobs run on the consumer's thread
(solo, prefork children) a watcher thread does the same while a job runs for
longer than a tick, so a finished task's result never waits for a long one,
and gives back waiting messages when the adaptive rule says so. A message whose
checks fail with an internal error is given back as a failed delivery (counted),
never in a loop.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from .. import states
from ..brokers.base import Delivery
from .job import Job, JobRunner
from .leases import LeaseKeeper, Renewal
from .limits import ThreadLimits
from .monitor import Limits, Monitor
from .outage import outage_or_exception, patient_run
from .prefetch import PrefetchRule
from .readiness import Declaration
from .revocation import RECHECK_AFTER, RevokingConsumer, to_recheck
from .taskevents import TaskEvents

if TYPE_CHECKING:
    from ..app.base import Celery

logger = logging.getLogger("celeriac.worker")

#: while every slot is busy, finished tasks are acknowledged at most this often (else
#: with the next lease request); the watcher thread of inline pools ticks as often
SETTLE_EVERY = 0.05


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


class Consumer(RevokingConsumer):
    """Fetches deliveries for a pool until told to stop."""

    def __init__(self, app: Celery, queues: list[str], pool: Any, *,
                 hostname: str | None = None, prefetch: int | PrefetchRule = 0,
                 poll_timeout: float = 1.0, owner: str | None = None,
                 limits: Limits | None = None, hard_in_process: bool = True,
                 monitor: Monitor | None = None, renewal: Renewal | None = None,
                 events: TaskEvents | None = None) -> None:
        self.app = app
        self.queues = queues
        self.pool: Pool = pool
        self.hostname = hostname or default_hostname()
        self.owner = owner or f"{self.hostname}:{os.getpid()}:{id(self):x}"
        #: the prefetch rule; an int is a fixed number of extra messages
        self.prefetch = (prefetch if isinstance(prefetch, PrefetchRule)
                         else PrefetchRule(pool.concurrency, fixed=prefetch))
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
        self.runner.timings = self.prefetch.observe
        # several jobs per loop turn (prefetch): results batched (jobs on this thread) or
        # stored by group commit (jobs on threads)
        self.runner.batch_results = bool(pool.inline) and self.prefetch.may_batch
        self.runner.group_results = not pool.inline and self.prefetch.may_batch
        self.revocations = self.runner.revocations
        self.buffer: collections.deque[Job] = collections.deque()
        #: guards the buffer against the watcher thread (inline pools)
        self._buffer_lock = threading.Lock()
        #: batched results are stored and acknowledgements taken as one step
        self._settle_lock = threading.Lock()
        #: monotonic time a buffered job last could start (dispatched, or buffered)
        self._moved = time.monotonic()
        #: what waited was given back since the last receive (see :meth:`_stalled`)
        self._held_back = False
        #: monotonic time acknowledgements were last sent
        self._acked_at = time.monotonic()
        self.stopping = threading.Event()
        #: the queues declared on the broker before the first receive (see .readiness)
        self.declaration = Declaration(self.broker, queues)
        #: a batch's revocations read with its lease where the broker can (Redis)
        self.broker.peek_revocations(app.backend)
        pool.start(self.runner)

    def run(self) -> None:
        """Consume until :meth:`stop`; then settle what was fetched but not started."""
        self.keeper.start()
        watcher = None
        if self.pool.inline and self.prefetch.may_batch:
            watcher = threading.Thread(target=patient_run, args=(self._watch_inline,),
                                       daemon=True, name="celeriac-prefetch")
            watcher.start()
        try:
            while not self.stopping.is_set():
                if not self.declaration.done.is_set():
                    self.declaration.attempt()
                self._fill()
                self._dispatch()
                self._watch_running()
        finally:
            self.stopping.set()
            if watcher is not None:
                watcher.join(5)
            self._flush_acks()
            self._release_buffer()
            self.keeper.stop()

    def stop(self) -> None:
        self.stopping.set()

    # -- receiving ------------------------------------------------------------------------
    def _flush_results(self) -> bool:  # False (acks must wait): the store failed
        try:
            self.runner.results.flush()
            return True
        except Exception:
            logger.exception("Storing results failed; retrying before acknowledging")
            return False

    def _settled(self) -> list[Delivery] | None:
        """The pending acknowledgements, every result of them stored (None: the result
        store failed; the acknowledgements stay pending). Taken before the results are
        stored: a job adds its result before its acknowledgement, so whatever is taken
        here has its result stored below (or by a flush that ended before)."""
        with self._settle_lock:
            acks = self.runner.acks.take()
            if not self._flush_results():
                self.runner.acks.restore(acks)
                return None
            return acks

    def _flush_acks(self) -> None:
        self._acked_at = time.monotonic()
        acks = self._settled()
        if not acks:
            return
        done = 0
        try:
            done = self.broker.ack(acks)
        except Exception:
            logger.exception("Acknowledging finished tasks failed; their leases will lapse "
                             "and they may run again")
        finally:
            self.runner.acks.settled(acks, done)

    def _fill(self) -> None:
        free = self.pool.free_slots()
        running_for = 0.0 if self.pool.inline else self.runner.longest_running()
        want = free + self.prefetch.extra(running_for) - len(self.buffer)
        if want <= 0 or (self.buffer and not free):  # top up when a slot frees, not in a spin
            if time.monotonic() - self._acked_at > SETTLE_EVERY:  # else with the next lease
                self._flush_acks()
            if not free and not self.pool.inline and self.prefetch.stalled(self._moved):
                self._stalled()
            self.pool.wait_for_slot(0.2)
            return
        timeout = 0.0 if self.buffer else self.poll_timeout
        self._acked_at = time.monotonic()
        if len(self.runner.results) and self.app.backend is not None:
            got = self._settle_and_receive(want)  # results ride along (see settle.py)
            if got is None:
                return
            done, batch, acks = got
        else:
            taken = self._settled()
            if taken is None:
                self.stopping.wait(1.0)
                return
            acks = taken
            try:  # settle what finished and lease more in one round trip where the broker can
                done, batch = self.broker.ack_and_receive(acks, self.queues, owner=self.owner,
                                                          limit=want, timeout=timeout)
            except Exception as exc:
                self.runner.acks.restore(acks)
                outage_or_exception(exc, "Receiving from %s failed; retrying", self.broker.url)
                self.stopping.wait(1.0)
                return
        self.runner.acks.settled(acks, done)
        self._held_back = False
        self.prefetch.asked(want, free, len(batch))
        self.monitor.received(len(batch))
        if batch:
            self.keeper.hold(batch)
            revoked = self.revocations.revoked_in(batch)
            jobs = [job for job in (self._prepare(d, revoked) for d in batch) if job is not None]
            checked = time.monotonic()
            for job in jobs:
                job.checked_at = checked
            with self._buffer_lock:
                if not self.buffer:
                    self._moved = time.monotonic()
                self.buffer.extend(jobs)
        self.keeper.sync()  # the renewer knows every lease before a job of them starts

    def _settle_and_receive(self, want: int
                            ) -> tuple[int, list[Delivery], list[Delivery]] | None:
        """Batched results, then the acknowledgements, then a lease of what is ready: in
        one round trip where the broker shares the result store's server (Redis); no
        wait (an empty turn waits in the next one). None: it failed, nothing was lost."""
        results = self.runner.results
        with self._settle_lock:
            acks = self.runner.acks.take()
            try:
                with results.carried() as batch:
                    written, done, got = self.broker.settle_and_receive(
                        self.app.backend, batch, self.app.result_expires_for(states.SUCCESS),
                        acks, self.queues, owner=self.owner, limit=want)
            except Exception as exc:
                self.runner.acks.restore(acks)
                outage_or_exception(exc, "Storing results or receiving from %s failed; "
                                    "retrying before acknowledging", self.broker.url)
                self.stopping.wait(1.0)
                return None
        results.report(batch, written)
        return done, got, acks

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
        while self.pool.free_slots() > 0 and not self.stopping.is_set():
            with self._buffer_lock:
                now = time.monotonic()
                if self.buffer and now - self.buffer[0].checked_at > RECHECK_AFTER:
                    self._recheck_waiting(now)
                if not self.buffer:
                    return
                job = self.buffer.popleft()
                self._moved = now
            if not self.broker.lease_alive(job.delivery):  # RabbitMQ gave it back already
                self._give_back(job.delivery, failed=False)
                continue
            self.pool.submit(job)

    def _recheck_waiting(self, now: float) -> None:
        """Check revocations again for buffered jobs that waited (prefetched, or behind an
        inline job): a revoke may have come meanwhile (one read for all of them)."""
        stale = to_recheck(self.buffer, now, self.prefetch.expected, self.pool.concurrency)
        revoked = self.revocations.revoked(job.id for job in stale)
        for job in stale:
            job.checked_at = now
        if revoked:
            for job in [j for j in self.buffer if j.id in revoked]:
                self.buffer.remove(job)
                self.runner.discard_revoked(job.delivery, job.request)

    def _release_buffer(self) -> None:
        with self._buffer_lock:
            jobs = list(self.buffer)
            self.buffer.clear()
        for job in jobs:
            self._give_back(job.delivery, failed=False)

    def _stalled(self) -> None:
        """The adaptive rule's safety net: every slot stayed busy for longer than the
        budget, so what waits here, or in the broker's prefetch window (RabbitMQ), goes
        back to the queue for another slot or worker (once until the next receive)."""
        if self._held_back:
            return
        self._held_back = True
        with self._buffer_lock:
            jobs = list(self.buffer)
            self.buffer.clear()
        for job in jobs:
            self._give_back(job.delivery, failed=False)
        if jobs:
            self.keeper.sync()
        try:
            pushed = self.broker.hold_back(self.queues)
        except Exception:
            logger.exception("Could not give back what %s pushed ahead", self.broker.url)
            pushed = 0
        if jobs or pushed:
            self.prefetch.given_back += len(jobs) + pushed
            logger.info("Gave back %d waiting message(s): the running task(s) took longer "
                        "than the prefetch budget (%.3gs)", len(jobs) + pushed,
                        self.prefetch.budget)

    def _watch_inline(self) -> None:
        """While a job runs on the consumer's thread (solo, prefork children) past a tick:
        tell the monitor's batch, settle the jobs that finished before it, and give back
        what waits once the adaptive rule says so."""
        tick = min(SETTLE_EVERY, max(0.005, self.prefetch.budget / 2 or SETTLE_EVERY))
        while not self.stopping.wait(tick):
            if self.pool.free_slots() > 0 or time.monotonic() - self._moved < tick:
                continue
            self.monitor.flush()
            if len(self.runner.acks) or len(self.runner.results):
                self._flush_acks()
            if self.prefetch.stalled(self._moved):
                self._stalled()

    def release_running(self) -> int:
        """Cold shutdown: give back the messages of jobs still running."""
        self._flush_acks()
        held = self.keeper.held()
        for delivery in held:
            self._give_back(delivery, failed=False)
        return len(held)
