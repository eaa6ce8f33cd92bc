"""Time limits inside a worker process: raise an exception in the thread running a task.

One timer thread keeps a heap of deadlines. A limit passes after that many real
seconds or, while a test's controlled clock is installed (:mod:`celeriac.clock`),
as soon as that clock moved that far, whichever comes first. When a soft limit passes,
:class:`~celeriac.exceptions.SoftTimeLimitExceeded` is raised asynchronously
in the task's thread (``PyThreadState_SetAsyncExc``), so the task can catch
it and clean up. Hard limits under the prefork pool are enforced by the
supervisor killing the child; under threads/solo the hard limit is raised
the same way as :class:`~celeriac.exceptions.TimeLimitExceeded`.

Strategies used by the job runner: :class:`ThreadLimits` (threads/solo),
:class:`AlarmLimits` (prefork children: ``SIGALRM`` interrupts blocking
calls), and :func:`limited` for ``async def`` bodies, which raises the limit
exception inside the coroutine at its current ``await``.
"""

from __future__ import annotations

import asyncio
import ctypes
import heapq
import inspect
import itertools
import signal
import threading
import time
from collections.abc import Generator
from typing import Any

from .. import clock
from ..exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

_counter = itertools.count()


def raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> bool:
    """Schedule ``exc_type`` to be raised in the thread ``thread_id``."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                                      ctypes.py_object(exc_type))
    if done > 1:  # should never happen; undo to be safe
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
        return False
    return done == 1


class TimeLimiter:
    """Arms and disarms per-task deadlines."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, type[BaseException]]] = []
        #: token -> the deadline in the process clock's time (only under a controlled clock)
        self._on_clock: dict[int, float] = {}
        self._armed: set[int] = set()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="celeriac-limits", daemon=True)
        self._thread.start()
        clock.on_change(self._clock_moved)

    def _clock_moved(self) -> None:
        with self._cond:
            self._cond.notify()

    def arm(self, seconds: float, exc_type: type[BaseException],
            thread_id: int | None = None) -> int:
        token = next(_counter)
        tid = thread_id if thread_id is not None else threading.get_ident()
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + seconds, token, tid, exc_type))
            self._armed.add(token)
            if clock.is_controlled():
                self._on_clock[token] = clock.time() + seconds
            self._cond.notify()
        return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._armed.discard(token)
            self._on_clock.pop(token, None)

    def _loop(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                if self._on_clock:
                    self._fire_by_clock()
                    continue
                deadline, token, tid, exc_type = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
                self._armed.discard(token)
                raise_in_thread(tid, exc_type)

    def _fire_by_clock(self) -> None:
        """Under a controlled clock: raise every limit whose clock or real deadline passed,
        then wait for the next real deadline or a move of the clock (lock held)."""
        now, real = clock.time(), time.monotonic()
        for deadline, token, tid, exc_type in list(self._heap):
            if token in self._armed and (real >= deadline or self._on_clock.get(token, now + 1)
                                         <= now):
                self._armed.discard(token)
                self._on_clock.pop(token, None)
                raise_in_thread(tid, exc_type)
        self._on_clock = {t: d for t, d in self._on_clock.items() if t in self._armed}
        live = [d for d, token, *_ in self._heap if token in self._armed]
        if live:
            self._cond.wait(max(0.0, min(live) - time.monotonic()))


class ThreadLimits:
    """Soft and hard limits raised asynchronously in the task's thread (threads/solo pools)."""

    def __init__(self, limiter: TimeLimiter | None = None, *, hard: bool = True) -> None:
        self.limiter = limiter or TimeLimiter()
        self.hard = hard

    def arm(self, soft: float | None, hard: float | None) -> list[int]:
        tokens = []
        if soft:
            tokens.append(self.limiter.arm(float(soft), SoftTimeLimitExceeded))
        if hard and self.hard:
            tokens.append(self.limiter.arm(float(hard), TimeLimitExceeded))
        return tokens

    def disarm(self, tokens: list[int]) -> None:
        for token in tokens:
            self.limiter.disarm(token)


class AlarmLimits:
    """Soft limit by ``SIGALRM`` in a prefork child, whose tasks run on the main thread.

    A signal interrupts blocking calls such as ``time.sleep`` (an asynchronous
    exception would wait for them to return). The hard limit is the
    supervisor's job: it kills the child.
    """

    def __init__(self) -> None:
        signal.signal(signal.SIGALRM, self._fire)

    @staticmethod
    def _fire(signum: int, frame: Any) -> None:
        raise SoftTimeLimitExceeded("soft time limit exceeded")

    def arm(self, soft: float | None, hard: float | None) -> list[int]:
        if not soft:
            return []
        signal.setitimer(signal.ITIMER_REAL, float(soft))
        return [1]

    def disarm(self, tokens: list[int]) -> None:
        if tokens:
            signal.setitimer(signal.ITIMER_REAL, 0)


#: what a task body returns most often, none of it awaitable (exact types)
_NOT_AWAITABLE = frozenset({type(None), bool, int, float, str, bytes, list, tuple, dict})


def awaitable(value: Any) -> bool:
    """``inspect.isawaitable``, answered at once for the plain values bodies return."""
    return type(value) not in _NOT_AWAITABLE and inspect.isawaitable(value)


class _Limited:
    """Drives a coroutine and turns our own cancellation into a time-limit exception.

    ``asyncio`` can only cancel a task; to raise ``SoftTimeLimitExceeded``
    *inside* the task body (so it can catch it and clean up) the cancellation
    that reaches this driver is replaced by the limit exception.
    """

    def __init__(self, coro: Any) -> None:
        self.coro = coro
        self.fired: type[BaseException] | None = None

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, send = self.coro, None
        throw: BaseException | None = None
        while True:
            try:
                yielded = coro.send(send) if throw is None else coro.throw(throw)
            except StopIteration as stop:
                return stop.value
            try:
                send, throw = (yield yielded), None
            except asyncio.CancelledError as exc:
                send, throw = None, exc
                if self.fired is not None:
                    throw, self.fired = self.fired(f"{self.fired.__name__}"), None
                    task = asyncio.current_task()
                    if task is not None and hasattr(task, "uncancel"):
                        task.uncancel()
            except BaseException as exc:
                send, throw = None, exc


async def limited(coro: Any, soft: float | None, hard: float | None) -> Any:
    """Await ``coro`` raising SoftTimeLimitExceeded / TimeLimitExceeded inside it on time."""
    if not soft and not hard:
        return await coro
    driver = _Limited(coro)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    handles = []

    def fire(exc_type: type[BaseException]) -> None:
        if task is not None and not task.done():
            driver.fired = exc_type
            task.cancel()

    if soft:
        handles.append(loop.call_later(float(soft), fire, SoftTimeLimitExceeded))
    if hard:
        handles.append(loop.call_later(float(hard), fire, TimeLimitExceeded))
    try:
        return await driver
    finally:
        for handle in handles:
            handle.cancel()
