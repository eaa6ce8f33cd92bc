"""In-process execution pools: ``solo`` (inline) and ``threads`` (N threads).

A pool reports free slots and runs jobs; the consumer decides how much to
fetch from the broker from ``free_slots()``, so nothing is hoarded behind a
long task. Every pool has the same small interface (``start(runner)``,
``free_slots``, ``running``, ``submit(job)``, ``wait_for_slot``, ``join``,
``terminate(job, signum)``, ``cancel``, ``shutdown``) and differs only in how a
job runs: here with :meth:`~celeriac.worker.job.JobRunner.run` on the consumer
thread or a pool thread, in :mod:`.aio` on an event loop. The prefork pool is
a supervisor of processes that each run a consumer with a solo pool (see
:mod:`.supervisor`).

A thread cannot be stopped safely: ``terminate`` returns False here (the
consumer logs a warning; the task runs to its end and its result is refused
by the result store's REVOKED rule).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .aio import AsyncioPool

if TYPE_CHECKING:
    from .job import Job, JobRunner


class SoloPool:
    """Runs each job inline in the consumer thread."""

    name = "solo"
    inline = True

    def __init__(self, concurrency: int = 1) -> None:
        self.concurrency = 1
        self._busy = False
        self.runner: JobRunner | None = None

    def start(self, runner: JobRunner) -> None:
        self.runner = runner

    def free_slots(self) -> int:
        return 0 if self._busy else 1

    def running(self) -> int:
        return 1 if self._busy else 0

    def submit(self, job: Job) -> None:
        assert self.runner is not None, "start(runner) first"
        self._busy = True
        try:
            self.runner.run(job)
        finally:
            self._busy = False

    def wait_for_slot(self, timeout: float) -> None:
        return None

    def join(self, timeout: float | None) -> bool:
        return True

    def terminate(self, job: Job, signum: int) -> bool:
        return False

    def cancel(self, timeout: float) -> None:
        """Nothing to cancel: a solo job runs on the consumer's own thread."""

    def shutdown(self) -> None:
        return None


class ThreadPool:
    """Runs jobs on ``concurrency`` threads."""

    name = "threads"
    inline = False

    def __init__(self, concurrency: int) -> None:
        self.concurrency = max(1, concurrency)
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="celeriac-task")
        self._cond = threading.Condition()
        self._running = 0
        self.runner: JobRunner | None = None

    def start(self, runner: JobRunner) -> None:
        self.runner = runner

    def free_slots(self) -> int:
        with self._cond:
            return self.concurrency - self._running

    def running(self) -> int:
        with self._cond:
            return self._running

    def submit(self, job: Job) -> None:
        assert self.runner is not None, "start(runner) first"
        with self._cond:
            self._running += 1
        future: Future[Any] = self._executor.submit(self.runner.run, job)
        future.add_done_callback(self._done)

    def _done(self, _future: Future[Any]) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def wait_for_slot(self, timeout: float) -> None:
        with self._cond:
            if self._running >= self.concurrency:
                self._cond.wait(timeout)

    def join(self, timeout: float | None) -> bool:
        """Wait until no job runs; False if some still run after ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: self._running == 0, timeout)

    def terminate(self, job: Job, signum: int) -> bool:
        return False

    def cancel(self, timeout: float) -> None:
        """Threads cannot be cancelled; their messages are given back by the consumer."""

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def make_pool(name: str, concurrency: int) -> Any:
    """The in-process pool called ``name`` (solo, threads, asyncio)."""
    if name == "solo":
        return SoloPool()
    if name == "threads":
        return ThreadPool(concurrency)
    if name == "asyncio":
        return AsyncioPool(concurrency)
    raise ValueError(f"unknown in-process pool {name!r}")
