"""The asyncio pool: one event loop, ``--concurrency`` = tasks in flight.

The consumer loop is the same as for the other pools (:mod:`.consumer`); only
how a job runs differs. The pool owns an event loop on its own thread:
``async def`` tasks are awaited on it (tracer phases that block, such as
result writes, hooks and follow-ups, run on I/O threads so they never stall
the loop), sync tasks run whole on a thread executor. Soft and hard time
limits of ``async def`` tasks are raised at their current ``await``
(:func:`~celeriac.worker.limits.limited`).

``terminate`` (``revoke(terminate=True)``) cancels a running ``async def``
task; a sync task on a thread cannot be stopped (False: the consumer warns).
A cold shutdown cancels every running task; their messages are given back.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .job import Job, JobRunner

IO_THREADS = 4


class AsyncioPool:
    """Runs jobs as asyncio tasks on one event loop thread."""

    name = "asyncio"
    inline = False

    def __init__(self, concurrency: int) -> None:
        self.concurrency = max(1, concurrency)
        self._cond = threading.Condition()
        self._futures: dict[str, Future[Any]] = {}
        self._jobs: dict[str, Job] = {}
        self.runner: JobRunner | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.io = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="celeriac-io")
        self.sync = ThreadPoolExecutor(min(self.concurrency, 64),
                                       thread_name_prefix="celeriac-task")

    def start(self, runner: JobRunner) -> None:
        self.runner = runner
        loop = self.loop = asyncio.new_event_loop()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.run_forever()

        self._thread = threading.Thread(target=main, name="celeriac-asyncio", daemon=True)
        self._thread.start()

    async def _offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self.loop is not None
        return await self.loop.run_in_executor(self.io, fn, *args)

    async def _sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self.loop is not None
        return await self.loop.run_in_executor(self.sync, fn, *args)

    def free_slots(self) -> int:
        with self._cond:
            return self.concurrency - len(self._futures)

    def running(self) -> int:
        with self._cond:
            return len(self._futures)

    def submit(self, job: Job) -> None:
        assert self.runner is not None and self.loop is not None, "start(runner) first"
        with self._cond:
            future = asyncio.run_coroutine_threadsafe(self._run(job), self.loop)
            self._futures[job.id] = future
            self._jobs[job.id] = job
        future.add_done_callback(partial(self._cancelled, job.id))

    def _cancelled(self, job_id: str, future: Future[Any]) -> None:
        """A job cancelled before it started never reaches _run's finally."""
        if future.cancelled():
            self._done(job_id)

    async def _run(self, job: Job) -> None:
        assert self.runner is not None
        try:
            await self.runner.run_async(job, self._offload, self._sync)
        finally:  # the slot is free once the job really ended (given back when cancelled)
            self._done(job.id)

    def _done(self, job_id: str) -> None:
        with self._cond:
            self._futures.pop(job_id, None)
            self._jobs.pop(job_id, None)
            self._cond.notify_all()

    def wait_for_slot(self, timeout: float) -> None:
        with self._cond:
            if len(self._futures) >= self.concurrency:
                self._cond.wait(timeout)

    def join(self, timeout: float | None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._futures, timeout)

    def terminate(self, job: Job, signum: int) -> bool:
        """Cancel a running ``async def`` task (any signal: asyncio can only cancel)."""
        if not inspect.iscoroutinefunction(job.task.run):
            return False
        with self._cond:
            future = self._futures.get(job.id)
        return future is not None and future.cancel()

    def cancel(self, timeout: float) -> None:
        """Cold shutdown: cancel every running ``async def`` task and wait for them to give
        their messages back (sync tasks on threads cannot be cancelled)."""
        with self._cond:
            pending = [f for job_id, f in self._futures.items()
                       if inspect.iscoroutinefunction(self._jobs[job_id].task.run)]
        for future in pending:
            future.cancel()
        if pending:
            self.join(timeout)

    def shutdown(self) -> None:
        loop = self.loop
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(5)
        self.io.shutdown(wait=True)
        self.sync.shutdown(wait=False, cancel_futures=True)
