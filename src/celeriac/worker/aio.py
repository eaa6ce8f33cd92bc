"""The asyncio pool: one event loop, ``--concurrency`` = tasks in flight.

``async def`` tasks are awaited on the loop (tracer phases: ``begin`` on the
loop, ``await task.run(...)`` under :func:`~.limits.limited` soft/hard
limits, ``succeeded``/``failed`` plus the ack on an I/O thread so result
writes never block the loop). Sync tasks run whole on a thread executor.
Broker calls (receive, ack, release) run on the I/O threads; leases are kept
by the usual :class:`~.leases.LeaseKeeper` thread.

Shutdown: SIGTERM/SIGINT warm (stop receiving, wait up to
``worker_soft_shutdown_timeout`` for running tasks, then give the rest back),
again or SIGQUIT cold (cancel and give everything back now).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import os
import signal
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .. import signals
from ..app.trace import Outcome, Tracer
from ..brokers.base import Delivery
from .consumer import revoked_ids
from .health import NodeHealth
from .job import Job, JobRunner, unwind
from .leases import LeaseKeeper
from .limits import ThreadLimits, limited

if TYPE_CHECKING:
    from .main import Worker

logger = logging.getLogger("celeriac.worker")

IO_THREADS = 4
POLL_TIMEOUT = 1.0


def run_asyncio_worker(worker: Worker) -> int:
    return asyncio.run(AsyncioWorker(worker).main())


class AsyncioWorker:
    """Receives into free slots and runs each job as an asyncio task."""

    def __init__(self, worker: Worker) -> None:
        app = worker.app
        self.worker, self.app = worker, app
        self.limit = max(1, worker.concurrency)
        self.prefetch = worker.prefetch
        self.queues = worker.queues
        self.owner = f"{worker.hostname}:{uuid.uuid4().hex[:16]}"
        self.broker = app.broker
        lease = float(app.conf.worker_lease_seconds)
        self.keeper = LeaseKeeper(self.broker, float(app.conf.worker_heartbeat_interval
                                                     or lease / 3))
        self.runner = JobRunner(app, self.keeper, worker.hostname, ThreadLimits())
        self.runner.batch_acks = True
        self.io = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="celeriac-io")
        self.sync = ThreadPoolExecutor(min(self.limit, 64), thread_name_prefix="celeriac-task")
        self.running: set[asyncio.Task[None]] = set()
        self.signals = 0
        self._flush_scheduled = False
        self.health = NodeHealth(app, worker.hostname, pool="asyncio", concurrency=self.limit,
                                 queues=self.queues,
                                 liveness_file=worker.options.get("liveness_file"))

    # -- main loop ---------------------------------------------------------------------
    async def main(self) -> int:
        self.stopping = asyncio.Event()
        self.cold = asyncio.Event()
        self.freed = asyncio.Event()
        self._install_signals()
        self.keeper.start()
        logger.info("%s", self.worker.banner())
        signals.worker_ready.send(sender=self.worker)
        logger.info("%s ready.", self.worker.hostname)
        try:
            while not self.stopping.is_set():
                await self._fill()
                self._beat()
        finally:
            await self._shutdown()
        return 0

    async def _fill(self) -> None:
        free = self.limit - len(self.running)
        if free <= 0:
            self.freed.clear()
            try:
                await asyncio.wait_for(self.freed.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
            return
        loop = asyncio.get_running_loop()
        want = free + self.prefetch
        try:
            jobs = await loop.run_in_executor(self.io, self._receive, want)
        except Exception:
            logger.exception("Receiving from %s failed; retrying", self.broker.url)
            await asyncio.sleep(1.0)
            return
        self.health.progress()
        for job in jobs:
            task = loop.create_task(self._run(job))
            self.running.add(task)
            task.add_done_callback(self._done)

    def _receive(self, limit: int) -> list[Job]:
        """On an I/O thread: lease, check revocations, prepare."""
        timeout = 0.0 if self.stopping.is_set() else POLL_TIMEOUT
        batch = self.broker.receive(self.queues, owner=self.owner, limit=limit,
                                    timeout=timeout)
        if not batch:
            return []
        self.keeper.hold(batch)
        revoked = revoked_ids(self.app, batch)
        jobs = []
        for delivery in batch:
            try:
                job = self.runner.prepare(delivery, revoked)
            except Exception:
                logger.exception("Could not prepare message %s; releasing it",
                                 delivery.message.task_id)
                self._give_back(delivery)
                continue
            if job is not None:
                jobs.append(job)
        return jobs

    def _done(self, task: asyncio.Task[None]) -> None:
        self.running.discard(task)
        self.freed.set()
        self.health.progress()
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().run_in_executor(self.io, self._flush_acks)

    def _flush_acks(self) -> None:
        """On an I/O thread: send every acknowledgement queued so far in one call."""
        self._flush_scheduled = False
        try:
            self.runner.acks.flush()
        except Exception:
            logger.exception("Acknowledging finished tasks failed; their leases will lapse "
                             "and they may run again")

    def _beat(self) -> None:
        if self.running:
            self.health.progress()
        self.health.beat(processed=self.runner.processed, busy=len(self.running))

    # -- one job -------------------------------------------------------------------------
    async def _run(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        try:
            tracer = self.runner.start(job)
            soft, hard = self.runner.limits_for(job)
            if inspect.iscoroutinefunction(job.task.run):
                await self._run_async(job, tracer, soft, hard)
            else:
                ctx = contextvars.copy_context()
                outcome = await loop.run_in_executor(self.sync, ctx.run, self.runner.trace,
                                                     tracer, soft, hard)
                await loop.run_in_executor(self.io, self.runner.finish, job, outcome)
        except asyncio.CancelledError:
            await loop.run_in_executor(self.io, self._give_back, job.delivery)
            raise
        except Exception:
            logger.exception("Internal error running %s[%s]; releasing the message",
                             job.call.name, job.call.id)
            await loop.run_in_executor(self.io, self._give_back, job.delivery)

    async def _run_async(self, job: Job, tracer: Tracer, soft: float | None,
                         hard: float | None) -> None:
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        request = ctx.run(tracer.begin)
        retval: Any = None
        error: Exception | None = None
        try:
            coro = job.task.run(*request.args, **request.kwargs)
            body = ctx.run(asyncio.ensure_future, limited(coro, soft, hard))
            retval = await body
        except Exception as exc:
            error = exc
        except BaseException:
            ctx.run(unwind, tracer)
            raise
        await loop.run_in_executor(self.io, self._complete, ctx, tracer, job, retval, error)

    def _complete(self, ctx: contextvars.Context, tracer: Tracer, job: Job, retval: Any,
                  error: Exception | None) -> None:
        """On an I/O thread: store the outcome, call hooks, settle the message."""
        if error is None:
            outcome: Outcome = ctx.run(tracer.succeeded, retval)
        else:
            outcome = ctx.run(self.runner.fail, tracer, error)
        self.runner.finish(job, outcome)

    def _give_back(self, delivery: Delivery) -> None:
        try:
            self.broker.release(delivery)
        finally:
            self.keeper.drop(delivery)

    # -- signals and shutdown ----------------------------------------------------------------
    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop, sig, False)
        loop.add_signal_handler(signal.SIGQUIT, self._stop, signal.SIGQUIT, True)
        loop.add_signal_handler(signal.SIGHUP, logger.warning,
                                "SIGHUP ignored by the asyncio pool (no children to restart)")

    def _stop(self, sig: int, cold: bool) -> None:
        self.signals += 2 if cold else 1
        how = "Cold" if self.signals >= 2 else "Warm"
        logger.warning("worker: %s shutdown (%s)", how, signal.Signals(sig).name)
        self.stopping.set()
        if self.signals >= 2:
            self.cold.set()

    async def _shutdown(self) -> None:
        signals.worker_shutting_down.send(sender=self.worker.hostname, sig="SIGTERM",
                                          how="Cold" if self.cold.is_set() else "Warm",
                                          exitcode=0)
        grace = float(self.app.conf.worker_soft_shutdown_timeout or 0)
        await self._drain(grace)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.io, self._flush_acks)
        forced = bool(self.running)
        if forced:
            logger.warning("Giving %d running task(s) back to the queue", len(self.running))
            for task in self.running:
                task.cancel()
            await asyncio.wait(set(self.running), timeout=5.0)
        await loop.run_in_executor(self.io, self._flush_acks)
        self.keeper.stop()
        self.health.remove()
        signals.worker_shutdown.send(sender=self.worker)
        self.io.shutdown(wait=True)
        self.sync.shutdown(wait=False, cancel_futures=True)
        if forced:
            logging.shutdown()
            os._exit(0)  # sync task threads cannot be cancelled; their messages are released

    async def _drain(self, grace: float) -> None:
        """Wait for running tasks until done, ``grace`` passed or a cold signal."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        cold = asyncio.ensure_future(self.cold.wait())
        try:
            while self.running and not self.cold.is_set():
                left = deadline - loop.time()
                if left <= 0:
                    break
                await asyncio.wait({*self.running, cold}, timeout=left,
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            cold.cancel()
