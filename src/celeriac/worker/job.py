"""One delivery's path through the worker: checks, running the task, then ack/release/DLQ.

:func:`prepare` decides before running: undecodable, refused or unregistered
messages are dead-lettered with a reason; a message past the redelivery limit
(its workers kept dying) is dead-lettered as ``worker_lost``; a future ETA
from a Celery producer goes back to the broker's delayed store; expired and
revoked tasks are recorded and dropped. :func:`execute` runs a prepared job
and settles the message according to the outcome.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .. import hooks, serialization, states
from ..app.task import Task
from ..app.trace import Outcome, Tracer, run_coroutine
from ..brokers import base
from ..canvas.callbacks import fail_outside_tracer
from ..exceptions import ContentDisallowed, DecodeError, TaskRevokedError, WorkerLostError
from ..messages import TaskCall, parse_task
from ..results.meta import store_result

if TYPE_CHECKING:
    from ..app.base import Celery
    from .leases import LeaseKeeper

from .limits import limited

logger = logging.getLogger("celeriac.worker")


class Limits(Protocol):
    """How time limits are armed around a task body (see :mod:`.limits`)."""

    def arm(self, soft: float | None, hard: float | None) -> list[int]: ...

    def disarm(self, tokens: list[int]) -> None: ...


class Monitor:
    """Hooks telling a supervisor what runs; the default does nothing."""

    def task_started(self, job: Job, hard: float | None) -> None:
        """A task body is about to run."""

    def task_finished(self, job: Job) -> None:
        """The body returned or raised (the message is settled next)."""

    def received(self, count: int) -> None:
        """A receive call returned ``count`` messages."""


def unwind(tracer: Tracer) -> None:
    """Pop the request/task stacks after a BaseException that ends the worker."""
    try:
        tracer._unwind()
    except Exception:
        logger.debug("Could not unwind the task context", exc_info=True)


class AckBatcher:
    """Collects acknowledgements so a consumer sends them in one broker call.

    The consumer flushes before each receive (and before giving messages back),
    so a finished task's ack waits at most one loop turn; its lease is still
    renewed meanwhile. Saves one write transaction per task when several
    tasks finish per turn (prefetch, thread or asyncio pools).
    """

    def __init__(self, broker: base.Broker, keeper: LeaseKeeper) -> None:
        self.broker, self.keeper = broker, keeper
        self._pending: list[base.Delivery] = []
        self._lock = threading.Lock()

    def add(self, delivery: base.Delivery) -> None:
        with self._lock:
            self._pending.append(delivery)

    def __len__(self) -> int:
        return len(self._pending)

    def take(self) -> list[base.Delivery]:
        """Hand the pending acks to a caller that sends them (see :meth:`settled`)."""
        with self._lock:
            batch, self._pending = self._pending, []
        return batch

    def restore(self, batch: list[base.Delivery]) -> None:
        """Put back acks whose sending failed, to be sent on the next turn."""
        with self._lock:
            self._pending[:0] = batch

    def settled(self, batch: list[base.Delivery], done: int) -> None:
        for d in batch:
            self.keeper.drop(d)
        if done < len(batch):
            logger.warning("%d acknowledgement(s) refused: lease lost, another worker owns "
                           "the message now", len(batch) - done)

    def flush(self) -> None:
        batch = self.take()
        if not batch:
            return
        done = 0
        try:
            done = self.broker.ack(batch)
        finally:
            self.settled(batch, done)


class ResultBatcher:
    """Collects plain SUCCESS results so a consumer stores them in one ``set_many``.

    Used only where jobs run on the consumer's own thread (solo, prefork
    children), so a result waits at most until the next loop turn, and is always
    flushed before the acknowledgement of its message is sent.
    """

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._pending: list[tuple[str, dict[str, Any]]] = []

    def add(self, task_id: str, meta: dict[str, Any]) -> None:
        self._pending.append((task_id, meta))

    def __len__(self) -> int:
        return len(self._pending)

    def flush(self) -> None:
        """Store the pending results; they stay pending if the store fails."""
        if not self._pending or self.app.backend is None:
            self._pending.clear()
            return
        self.app.backend.set_many(self._pending,
                                  expires=self.app.result_expires_for(states.SUCCESS))
        self._pending.clear()


@dataclass
class Job:
    """A delivery that passed the checks and may run."""

    delivery: base.Delivery
    call: TaskCall
    task: Task


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
        self.accept = serialization.accepted_types(app.conf.accept_content)
        self.max_redeliveries = int(app.conf.worker_max_redeliveries)
        self.processed = 0
        self.active: dict[str, Job] = {}
        self._lock = threading.Lock()

    # -- before running --------------------------------------------------------------
    def prepare(self, delivery: base.Delivery, revoked: set[str]) -> Job | None:
        message = delivery.message
        try:
            call = parse_task(message, self.accept)
        except ContentDisallowed as exc:
            return self._dead(delivery, base.CONTENT_DISALLOWED, str(exc))
        except DecodeError as exc:
            return self._dead(delivery, base.DECODE_ERROR, str(exc))
        task = self.app.tasks.get(call.name)
        if task is None:
            return self._dead(delivery, base.UNREGISTERED, f"Received unregistered task "
                              f"of type {call.name!r}")
        if delivery.lost_count and (0 < self.max_redeliveries <= delivery.lost_count
                                    or task.reject_on_worker_lost is False):
            # explicit reject_on_worker_lost=False keeps Celery's "never re-run after a
            # worker loss", quarantined in the dead-letter store instead of dropped
            return self._worker_lost(delivery, call)
        now = time.time()
        if call.eta is not None and call.eta > now + 0.005:
            self.broker.release(delivery, not_before=call.eta)
            self.keeper.drop(delivery)
            return None
        if call.expires is not None and call.expires <= now:
            logger.info("Discarding expired task %s[%s]", call.name, call.id)
            return self._drop(delivery, call, TaskRevokedError("expired"))
        if call.id in revoked:
            logger.info("Discarding revoked task %s[%s]", call.name, call.id)
            return self._drop(delivery, call, None)
        refused = hooks._admission_checks and hooks.refuse_reason(self.app, call)
        if refused:
            logger.info("Discarding task %s[%s]: %s", call.name, call.id, refused)
            return self._drop(delivery, call, None)
        logger.info("Task %s[%s] received", call.name, call.id)
        return Job(delivery, call, task)

    def _dead(self, delivery: base.Delivery, reason: str, detail: str) -> Job | None:
        logger.error("Dead-lettering message %s (%s): %s", delivery.message.task_id, reason,
                     detail)
        self.broker.dead_letter(delivery, f"{reason}: {detail}" if detail else reason)
        self.keeper.drop(delivery)
        return None

    def _worker_lost(self, delivery: base.Delivery, call: TaskCall) -> Job | None:
        exc = WorkerLostError(f"Worker exited prematurely while running {call.name}[{call.id}] "
                              f"({delivery.lost_count} times): message dead-lettered")
        fail_outside_tracer(self.app, delivery.message, exc)
        return self._dead(delivery, base.WORKER_LOST,
                          f"{delivery.lost_count} deliveries lost with their worker")

    def _drop(self, delivery: base.Delivery, call: TaskCall,
              exc: BaseException | None) -> Job | None:
        if exc is not None:
            store_result(self.app, call.id, exc, states.REVOKED)
        self.broker.ack([delivery])
        self.keeper.drop(delivery)
        return None

    # -- running ----------------------------------------------------------------------
    def request_for(self, job: Job) -> dict[str, Any]:
        call, d = job.call, job.delivery
        h = call.headers
        info = dict(call.properties.get("delivery_info") or {})
        info.update({"routing_key": d.queue, "priority": d.message.priority,
                     "redelivered": bool(d.redelivered or info.get("redelivered"))})
        embed = call.embed
        return {
            "id": call.id, "task": call.name, "args": call.args, "kwargs": call.kwargs,
            "retries": call.retries, "eta": h.get("eta"), "expires": h.get("expires"),
            "group": h.get("group"), "group_index": h.get("group_index"),
            "root_id": h.get("root_id"), "parent_id": h.get("parent_id"),
            "correlation_id": call.properties.get("correlation_id", call.id),
            "reply_to": call.properties.get("reply_to"), "hostname": self.hostname,
            "delivery_info": info, "headers": h, "properties": call.properties,
            "timelimit": call.timelimit, "origin": h.get("origin"),
            "ignore_result": bool(h.get("ignore_result")), "shadow": h.get("shadow"),
            "callbacks": embed.get("callbacks"), "errbacks": embed.get("errbacks"),
            "chain": embed.get("chain"), "chord": embed.get("chord"),
            "stamps": h.get("stamps") or {}, "stamped_headers": h.get("stamped_headers"),
            "argsrepr": h.get("argsrepr"), "kwargsrepr": h.get("kwargsrepr"),
            "replaced_task_nesting": h.get("replaced_task_nesting") or 0, "is_eager": False,
        }

    def execute(self, job: Job) -> Outcome:
        """Run a job on this thread and settle its message."""
        tracer = self.start(job)
        soft, hard = self.limits_for(job)
        self.monitor.task_started(job, hard)
        try:
            outcome = self.trace(tracer, soft, hard)
        finally:
            self.monitor.task_finished(job)
        self.finish(job, outcome)
        return outcome

    def start(self, job: Job) -> Tracer:
        """Acknowledge first for ``acks_late=False`` tasks; build the tracer."""
        d = job.delivery
        acks_late = bool(job.task.acks_late)
        if not acks_late:
            self.broker.ack([d])  # at-most-once, as the task asked
        with self._lock:
            self.active[job.call.id] = job
        return Tracer(job.task, self.request_for(job),
                      guard=(lambda: self.keeper.still_owner(d)) if acks_late else None,
                      result_sink=self.results.add if self.batch_results else None)

    def limits_for(self, job: Job) -> tuple[float | None, float | None]:
        """(soft, hard) seconds: the message's ``timelimit`` header, else the task's."""
        hard, soft = job.call.timelimit
        hard = hard if hard is not None else job.task.time_limit
        soft = soft if soft is not None else job.task.soft_time_limit
        return (float(soft) if soft else None), (float(hard) if hard else None)

    def trace(self, tracer: Tracer, soft: float | None, hard: float | None) -> Outcome:
        """Tracer phases with the limits armed only around the task body."""
        try:
            ctx = tracer.begin()
            tokens = self.limits.arm(soft, hard) if self.limits is not None else []
            try:
                retval = tracer.task.run(*ctx.args, **ctx.kwargs)
            finally:
                if self.limits is not None:
                    self.limits.disarm(tokens)
            if inspect.isawaitable(retval):
                retval = run_coroutine(limited(retval, soft,
                                               hard if self.hard_in_process else None))
        except Exception as exc:
            return self.fail(tracer, exc)
        except BaseException:
            unwind(tracer)
            raise
        return tracer.succeeded(retval)

    @staticmethod
    def fail(tracer: Tracer, exc: Exception) -> Outcome:
        """Apply ``autoretry_for`` (which may raise Retry), then record the failure."""
        try:
            tracer.autoretry(exc)
        except Exception as retry:
            return tracer.failed(retry)
        return tracer.failed(exc)

    def finish(self, job: Job, outcome: Outcome) -> None:
        """Log, settle the message (acks_late) and forget the job."""
        with self._lock:
            self.active.pop(job.call.id, None)
        self._log(job, outcome)
        d = job.delivery
        if not job.task.acks_late or not self.settle(d, outcome, job.task):
            self.keeper.drop(d)
        self.processed += 1

    def settle(self, d: base.Delivery, outcome: Outcome, task: Task) -> bool:
        """Acknowledge, requeue or dead-letter after the run (acks_late).

        Every broker call is fenced by the lease token: if another worker owns
        the message now, nothing happens here and it is only logged. A plain
        acknowledgement is queued on :attr:`acks` (True is returned: the
        batcher drops the lease once the ack is sent).
        """
        if outcome.state == states.REJECTED:
            done = (self.broker.release(d) if outcome.requeue
                    else self.broker.dead_letter(d, f"{base.REJECTED}: {outcome.exc}"))
        elif outcome.state == states.FAILURE and task.acks_on_failure_or_timeout is False:
            done = self.broker.release(d)
        else:
            self.acks.add(d)
            if not self.batch_acks:
                self.acks.flush()
            return True
        if not done:
            logger.warning("Not settling %s[%s]: lease lost, another worker owns it now",
                           task.name, d.message.task_id)
        return False

    def _log(self, job: Job, outcome: Outcome) -> None:
        name, tid = job.call.name, job.call.id
        if outcome.state == states.SUCCESS:
            logger.info("Task %s[%s] succeeded in %.6fs: %r", name, tid, outcome.runtime,
                        outcome.retval)
        elif outcome.state == states.FAILURE:
            logger.info("Task %s[%s] failed in %.6fs: %r", name, tid, outcome.runtime,
                        outcome.exc)
        elif outcome.state == states.REJECTED:
            logger.info("Task %s[%s] rejected (requeue=%s): %s", name, tid, outcome.requeue,
                        outcome.exc)
        elif outcome.state == states.IGNORED:
            logger.info("Task %s[%s] ignored", name, tid)
