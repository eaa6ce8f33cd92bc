"""Time limits inside a worker process: raise an exception in the thread running a task.

One timer thread keeps a heap of deadlines. When a soft limit passes,
:class:`~celeriac.exceptions.SoftTimeLimitExceeded` is raised asynchronously
in the task's thread (``PyThreadState_SetAsyncExc``), so the task can catch
it and clean up. Hard limits under the prefork pool are enforced by the
supervisor killing the child; under threads/solo the hard limit is raised
the same way as :class:`~celeriac.exceptions.TimeLimitExceeded`.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import threading
import time

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
        self._armed: set[int] = set()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="celeriac-limits", daemon=True)
        self._thread.start()

    def arm(self, seconds: float, exc_type: type[BaseException],
            thread_id: int | None = None) -> int:
        token = next(_counter)
        tid = thread_id if thread_id is not None else threading.get_ident()
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + seconds, token, tid, exc_type))
            self._armed.add(token)
            self._cond.notify()
        return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._armed.discard(token)

    def _loop(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, token, tid, exc_type = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
                self._armed.discard(token)
                raise_in_thread(tid, exc_type)
