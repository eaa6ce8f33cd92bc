"""One delivery's path through the worker: checks, running the task, then ack/release/DLQ.

:meth:`JobRunner.prepare` decides before running; :mod:`.intake` opens the message: it is
validated once into its :class:`~celeriac.app.request.Request` (every field of envelope,
headers, properties, body and embedded signatures); one that cannot run as written is
dead-lettered on its first delivery with a reason naming the field
(``decode_error: embed.callbacks[0]: ...``),
as are refused (``content_disallowed``), unregistered, oversized, unsigned, badly signed
and replayed ones (:mod:`celeriac.security` opens a sealed message first): nothing of
those is decoded, imported or run. A message past the redelivery limit is dead-lettered
as ``worker_lost``; a future ETA from a Celery producer goes back to the broker's delayed
store, as does a message over its task's ``rate_limit`` (:mod:`.ratelimit`); expired and
revoked tasks are recorded and dropped; a redelivered message whose task's outcome is
stored is acknowledged without running (:mod:`.redelivery`).

:meth:`JobRunner.run` (sync pools) and :meth:`JobRunner.run_async` (the asyncio pool)
run a prepared job through the tracer and settle the message (:mod:`.settle`). Whatever
happens after the body ran never runs it again: a follow-up step that cannot be sent (a
link, the next chain step, the chord join) is logged and dead-lettered on its own
(``followup_failed``) while the task's message is acknowledged; an internal error gives
the message back as a *failed* delivery, which counts towards
``worker_max_redeliveries``, so no message can loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .. import clock, hooks, retry, signals, states
from ..app.context import Context
from ..app.request import Request
from ..app.task import Task
from ..app.trace import Outcome, Tracer, body_of, run_coroutine
from ..brokers import base
from ..exceptions import NotRegistered, TaskRevokedError
from ..results.meta import store_result
from .followups import FollowupRecorder
from .intake import Intake, Refusal
from .limits import awaitable, limited
from .lost import ACKED, DEAD, RETRY, RUN, TIMED_OUT, LostRule
from .monitor import Limits, Monitor
from .outage import patiently
from .ratelimit import RateLimiter
from .redelivery import DoneBefore
from .revocation import Revocations
from .settle import AckBatcher, ResultBatcher, log_outcome, settle
from .slots import Slots
from .taskevents import TaskEvents

if TYPE_CHECKING:
    from ..app.base import Celery
    from .leases import LeaseKeeper

logger = logging.getLogger("celeriac.worker")

#: ``await offload(fn, *args)``: run a blocking call off the event loop
Offload = Callable[..., Awaitable[Any]]


@dataclass
class Job:
    """A delivery that passed the checks and may run: its message, request and task."""

    delivery: base.Delivery
    request: Request
    task: Task
    #: monotonic time its revocation was last read (see ``revocation.RECHECK_AFTER``)
    checked_at: float = 0.0
    #: the signal of a ``revoke(terminate=True)`` that reached it while running
    terminated: int | None = None
    #: wall time its body started (None: not started)
    started_at: float | None = None
    #: monotonic time it started (0: not started), for run times
    started_mono: float = 0.0
    #: seconds from when its message became ready to its start (None: unknown)
    time_to_start: float | None = None
    acks_late: bool = True  # the task's, read once when the job is made

    @cached_property
    def id(self) -> str:
        return str(self.request.id)

    @cached_property
    def name(self) -> str:
        return self.request.name


class JobRunner:
    """Prepares and executes deliveries for one consumer."""

    def __init__(self, app: Celery, keeper: LeaseKeeper, hostname: str,
                 limits: Limits | None = None, *, hard_in_process: bool = True,
                 monitor: Monitor | None = None) -> None:
        self.app = app
        self.broker = app.broker
        self.keeper = keeper
        self.hostname = hostname
        self.limits = limits
        #: False under prefork: the supervisor enforces hard limits by killing the child
        self.hard_in_process = hard_in_process
        self.monitor = monitor or Monitor()
        self.acks = AckBatcher(self.broker, keeper)
        #: True when the owner (a consumer) flushes ``acks`` itself; else each ack is sent now
        self.batch_acks = False
        self.results = ResultBatcher(app)
        #: True when jobs run on the consumer thread: SUCCESS results are batched too
        self.batch_results = False
        #: True when jobs run on threads: SUCCESS results are stored by group commit
        self.group_results = False
        #: told each finished job's run time in seconds (the consumer's prefetch rule)
        self.timings: Callable[[float], None] | None = None
        self.revocations = Revocations(app)
        self.slots = Slots(self.broker, keeper)
        self.rates = RateLimiter(self.broker,
                                 disabled=bool(app.conf.get("worker_disable_rate_limits")))
        self.intake = Intake(app, hostname)
        self.done_before = DoneBefore(app, keeper)  # redelivered, its outcome stored
        self.security = self.intake.security
        self.lost = LostRule(app)  # redelivered after a lost worker (see .lost)
        self.processed = 0
        #: the ``sender`` of the consumer-side signals (Celery sends its Consumer)
        self.consumer: Any = self
        self.processed_names: collections.Counter[str] = collections.Counter()
        #: task events (``-E``); the consumer sets them up
        self.events: TaskEvents | None = None
        self.active: dict[str, Job] = {}
        self._lock = threading.Lock()

    # -- before running --------------------------------------------------------------
    def prepare(self, delivery: base.Delivery, revoked: set[str]) -> Job | None:
        try:  # nothing of the body is decoded before its size and signature are checked
            message, nonce, request = self.intake.open(delivery)
        except Refusal as refusal:
            if refusal.rejected is not None:
                signals.task_rejected.send(sender=self.consumer, message=refusal.message,
                                           exc=refusal.rejected)
            return self._dead(delivery, refusal.reason, refusal.detail, refusal.nonce)
        task = self.app.tasks.get(request.task)
        if task is None:
            signals.task_unknown.send(sender=self.consumer, message=delivery.message,
                                      exc=NotRegistered(request.task), name=request.task,
                                      id=request.id)
            return self._dead(delivery, base.UNREGISTERED, f"Received unregistered task "
                              f"of type {request.task!r}", nonce)
        lost = self.lost.verdict(delivery, task, request) if delivery.lost_count else RUN
        if lost is DEAD:
            return self._dead(delivery, base.WORKER_LOST,
                              self.lost.dead(delivery, message, request, task), nonce)
        if lost is TIMED_OUT:  # its runs passed their hard limit (see .timeouts)
            return self._dead(delivery, base.TIME_LIMIT, self.lost.timed_out(delivery, task),
                              nonce)
        if lost is ACKED:
            return self._drop(delivery, request, None)
        now = clock.time()
        if request.eta_at is not None and request.eta_at > now + 0.005:
            self.broker.release(delivery, not_before=request.eta_at)
            self.keeper.drop(delivery)
            return None
        if request.expires_at is not None and request.expires_at <= now:
            logger.info("Discarding expired task %s[%s]", request.task, request.id)
            signals.task_revoked.send(sender=task, request=request, terminated=False,
                                      signum=None, expired=True)
            if self.events is not None:
                self.events.revoked(request.id, expired=True, task=task)
            return self._drop(delivery, request, TaskRevokedError("expired"))
        if request.id in revoked:
            self.discard_revoked(delivery, request)
            return None
        refused = hooks._admission_checks and hooks.refuse_reason(self.app, request)
        if refused:
            logger.info("Discarding task %s[%s]: %s", request.task, request.id, refused)
            return self._drop(delivery, request, None)
        if not self.rates.admit(delivery, task):  # back in the broker until its turn
            self.keeper.drop(delivery)
            return None
        if self.done_before.settle(delivery, request, task):
            return None
        if lost is RETRY:  # retry_on_worker_lost (see .lost)
            if self.lost.retry(delivery, request, task):
                return self._drop(delivery, request, None)
            return self._dead(delivery, base.WORKER_LOST,
                              self.lost.dead(delivery, message, request, task), nonce)
        logger.info("Task %s[%s] received", request.task, request.id)
        signals.task_received.send(sender=self.consumer, request=request)
        job = Job(delivery, request, task, acks_late=bool(task.acks_late))
        if self.events is not None:
            self.events.received(job)
        return job

    def discard_revoked(self, delivery: base.Delivery, request: Request) -> None:
        logger.info("Discarding revoked task %s[%s]", request.task, request.id)
        signals.task_revoked.send(sender=self.app.tasks.get(request.task), request=request,
                                  terminated=False, signum=None, expired=False)
        if self.events is not None:
            self.events.revoked(request.id, task=self.app.tasks.get(request.task))
        self._drop(delivery, request, None)

    def _dead(self, delivery: base.Delivery, reason: str, detail: str,
              nonce: str | None = None) -> Job | None:
        """Dead-letter; a sealed message's nonce is forgotten when it was not run, so
        ``celeriac deadletters retry`` can run it later (within the replay window)."""
        logger.error("Dead-lettering message %s (%s): %s", delivery.message.task_id, reason,
                     detail)
        self.broker.dead_letter(delivery, f"{reason}: {detail}" if detail else reason)
        self.keeper.drop(delivery)
        guard = self.security.guard() if nonce and self.security is not None else None
        if guard is not None:
            try:
                guard.forget(nonce)
            except Exception:  # a retry of this dead letter is then refused as a replay
                logger.exception("Could not forget the nonce of %s", delivery.message.task_id)
        return None

    def _drop(self, delivery: base.Delivery, request: Request,
              exc: BaseException | None) -> Job | None:
        if exc is not None:
            store_result(self.app, request.id, exc, states.REVOKED)
        self.broker.ack([delivery])
        self.keeper.drop(delivery)
        return None

    def running(self) -> list[str]:
        """Ids of the jobs running now (started, not yet finished)."""
        with self._lock:
            return list(self.active)

    def longest_running(self) -> float:
        """Seconds the longest-running job has run so far (0: none runs)."""
        with self._lock:
            first = min((job.started_mono for job in self.active.values()), default=0.0)
        return time.monotonic() - first if first else 0.0

    # -- running ----------------------------------------------------------------------
    def run(self, job: Job) -> None:
        """Execute on this thread; an internal error gives the message back as failed.
        Outside the body, calls wait out an outage (see :mod:`.outage`)."""
        with retry.patient():
            try:
                self.execute(job)
            except Exception:
                logger.exception("Internal error running %s[%s]; releasing the message "
                                 "(counted as a failed delivery)", job.name, job.id)
                self.give_back(job, failed=True)

    async def run_async(self, job: Job, offload: Offload, sync: Offload) -> None:
        """Run a job from the asyncio pool: ``async def`` bodies on the loop (blocking
        phases through ``offload``), sync ones whole on a thread (``sync``); the phases
        off the loop wait out an outage, as :meth:`run`."""
        offload, sync = patiently(offload), patiently(sync)
        try:
            if inspect.iscoroutinefunction(job.task.run):
                await self.execute_async(job, offload)
            else:
                await sync(contextvars.copy_context().run, self.execute, job)
        except asyncio.CancelledError:
            if job.terminated is not None:
                await offload(self.terminated, job)
            else:  # cold shutdown: give it back, not a failure
                await offload(self.give_back, job, False)
        except Exception:
            logger.exception("Internal error running %s[%s]; releasing the message "
                             "(counted as a failed delivery)", job.name, job.id)
            await offload(self.give_back, job, True)

    def execute(self, job: Job) -> Outcome | None:
        """Run a job on this thread and settle its message (None: deferred, its
        concurrency slot was full; see :mod:`.slots`)."""
        entry = self.slots.enter(job)
        if entry.busy and self.slots.defer(job, entry):
            return None
        try:
            tracer = self.start(job)
            soft, hard = self.limits_for(job)
            self.monitor.task_started(job, hard)
            try:
                outcome = tracer.run(self.slots.body(job, entry) if entry.busy or entry.error
                                     else lambda ctx: self._call(job, ctx, soft, hard))
            finally:
                self.monitor.task_finished(job)
        finally:
            self.slots.leave(job, entry)
        self.finish(job, outcome)
        return outcome

    async def execute_async(self, job: Job, offload: Offload) -> Outcome | None:
        """Run an ``async def`` task on the running loop and settle its message."""
        entry = await offload(self.slots.enter, job)
        if entry.busy and await offload(self.slots.defer, job, entry):
            return None
        try:
            tracer: Tracer = await offload(self.start, job)
            soft, hard = self.limits_for(job)
            self.monitor.task_started(job, hard)
            try:
                outcome = await tracer.run_async(
                    self.slots.async_body(job, entry) if entry.busy or entry.error else
                    lambda ctx: limited(body_of(job.task)(*ctx.args, **ctx.kwargs), soft, hard),
                    offload)
            finally:
                self.monitor.task_finished(job)
        finally:
            await offload(self.slots.leave, job, entry)
        await offload(self.finish, job, outcome)
        return outcome

    def _call(self, job: Job, ctx: Context, soft: float | None, hard: float | None) -> Any:
        """The task body with its time limits armed (sync; a coroutine is run here)."""
        tokens = self.limits.arm(soft, hard) if self.limits is not None else []
        try:
            with retry.patient(False):  # the task's own calls fail as they always did
                retval = body_of(job.task)(*ctx.args, **ctx.kwargs)
        finally:
            if self.limits is not None:
                self.limits.disarm(tokens)
            self.monitor.body_ended(job)
        if awaitable(retval):
            retval = run_coroutine(limited(retval, soft, hard if self.hard_in_process else None))
        return retval

    def start(self, job: Job) -> Tracer:
        """Acknowledge first for ``acks_late=False`` tasks; build the tracer."""
        d, acks_late = job.delivery, job.acks_late
        if not acks_late:
            self.broker.ack([d])  # at-most-once, as the task asked
        with self._lock:
            self.active[job.id] = job
        job.started_at, job.started_mono = clock.time(), time.monotonic()
        if self.events is not None:
            self.events.started(job)
        return Tracer(job.task, job.request,
                      guard=(lambda: self.keeper.still_owner(d)) if acks_late else None,
                      result_sink=(self.results.add if self.batch_results else
                                   self.results.store if self.group_results else None),
                      followup_failed=FollowupRecorder(self.app, job.delivery, job.request))

    def limits_for(self, job: Job) -> tuple[float | None, float | None]:
        """(soft, hard) seconds: the message's ``timelimit`` header, else the task's."""
        hard, soft = job.request.timelimit
        hard = hard if hard is not None else job.task.time_limit
        soft = soft if soft is not None else job.task.soft_time_limit
        return (float(soft) if soft else None), (float(hard) if hard else None)

    def finish(self, job: Job, outcome: Outcome) -> None:
        """Log, settle the message (acks_late) and forget the job."""
        with self._lock:
            self.active.pop(job.id, None)
        if self.timings is not None and job.started_mono:
            self.timings(time.monotonic() - job.started_mono)
        log_outcome(job.name, job.id, job.task, outcome)
        self.processed_names[job.name] += 1
        if self.events is not None:
            self.events.finished(job, outcome)
        d = job.delivery
        if not job.acks_late or not settle(self.broker, self.acks, d, outcome, job.task,
                                           batch=self.batch_acks):
            self.keeper.drop(d)
        self.processed += 1

    def give_back(self, job: Job, failed: bool) -> None:
        """Release the job's message (``failed``: counted as a failed delivery)."""
        with self._lock:
            self.active.pop(job.id, None)
        try:
            self.broker.release(job.delivery, failed=failed)
        except Exception:
            logger.exception("Could not give %s[%s] back; its lease will lapse", job.name,
                             job.id)
        finally:
            self.keeper.drop(job.delivery)

    def terminated(self, job: Job) -> None:
        """A running task stopped by ``revoke(terminate=True)``: its message is settled
        (it is not run again) and its state stays REVOKED."""
        with self._lock:
            self.active.pop(job.id, None)
        logger.warning("Task %s[%s] terminated (revoked)", job.name, job.id)
        signals.task_revoked.send(sender=job.task, request=job.request, terminated=True,
                                  signum=job.terminated, expired=False)
        if self.events is not None:
            self.events.revoked(job.id, terminated=True, signum=job.terminated, task=job.task)
        try:
            self.broker.ack([job.delivery])
        finally:
            self.keeper.drop(job.delivery)
        self.processed += 1
