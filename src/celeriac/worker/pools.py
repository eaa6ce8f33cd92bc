"""In-process execution pools: ``threads`` (N threads) and ``solo`` (inline).

A pool only reports free slots and runs callables; the consumer decides how
much to fetch from the broker from ``free_slots()``, so nothing is hoarded
behind a long task. The prefork pool is a supervisor of processes that each
run a consumer with a solo/threads pool (see ``worker.supervisor``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class SoloPool:
    """Runs each job inline in the consumer thread."""

    name = "solo"

    def __init__(self, concurrency: int = 1) -> None:
        self.concurrency = 1
        self._busy = False

    def free_slots(self) -> int:
        return 0 if self._busy else 1

    def running(self) -> int:
        return 1 if self._busy else 0

    def submit(self, fn: Callable[[], Any]) -> None:
        self._busy = True
        try:
            fn()
        finally:
            self._busy = False

    def wait_for_slot(self, timeout: float) -> None:
        return None

    def join(self, timeout: float | None) -> bool:
        return True

    def shutdown(self) -> None:
        return None


class ThreadPool:
    """Runs jobs on ``concurrency`` threads."""

    name = "threads"

    def __init__(self, concurrency: int) -> None:
        self.concurrency = max(1, concurrency)
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="celeriac-task")
        self._cond = threading.Condition()
        self._running = 0

    def free_slots(self) -> int:
        with self._cond:
            return self.concurrency - self._running

    def running(self) -> int:
        with self._cond:
            return self._running

    def submit(self, fn: Callable[[], Any]) -> None:
        with self._cond:
            self._running += 1
        future: Future[Any] = self._executor.submit(fn)
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

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def make_pool(name: str, concurrency: int) -> SoloPool | ThreadPool:
    if name == "solo":
        return SoloPool()
    if name == "threads":
        return ThreadPool(concurrency)
    raise ValueError(f"unknown in-process pool {name!r}")
