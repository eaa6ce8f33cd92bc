"""``drain``: run everything enqueued to completion in the test process (Oban's ``drain_queue``).

A real worker (:func:`~.worker.start_worker`, ``solo`` pool, so tasks run one at
a time in publish order) consumes the queues until nothing is ready or taken,
counting through the task signals what succeeded, failed and was retried. What
tasks enqueue is run too. With ``with_scheduled`` (the default), delayed
messages (``countdown``, ``eta``, retries with backoff) are run as well: the
process clock jumps to each one's due time in order, so a retry with
exponential backoff runs its retries in order without waiting. Under the
system clock, ``drain`` installs a controlled clock for the jumps and puts the
system clock back at the end (time seen by tasks then went forward and back).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ... import clock, signals
from ...app.base import Celery
from ...exceptions import TimeoutError as CeleriacTimeout
from .worker import start_worker

#: Steps (clock jumps) one drain or advance may take before it is considered runaway.
MAX_STEPS = 10_000


@dataclass
class DrainResult:
    """What ran: counts, and ``(task name, task id, state)`` in the order they ended."""

    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    runs: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.succeeded + self.failed + self.retried

    def __iadd__(self, other: DrainResult) -> DrainResult:
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.retried += other.retried
        self.runs.extend(other.runs)
        return self


@contextmanager
def record_outcomes(app: Celery) -> Iterator[DrainResult]:
    """Count this app's task outcomes while the block runs."""
    result = DrainResult()
    lock = threading.Lock()

    def add(sender: Any, state: str, field_name: str, request: Any = None) -> None:
        if getattr(sender, "app", None) is not app:
            return
        task_id = getattr(request, "id", None) or getattr(sender.request, "id", None)
        with lock:
            setattr(result, field_name, getattr(result, field_name) + 1)
            result.runs.append((str(sender.name), str(task_id), state))

    def success(sender: Any = None, **_: Any) -> None:
        add(sender, "SUCCESS", "succeeded")

    def failure(sender: Any = None, **_: Any) -> None:
        add(sender, "FAILURE", "failed")

    def retry(sender: Any = None, request: Any = None, **_: Any) -> None:
        add(sender, "RETRY", "retried", request)

    pairs = ((signals.task_success, success), (signals.task_failure, failure),
             (signals.task_retry, retry))
    for signal, receiver in pairs:
        signal.connect(receiver)
    try:
        yield result
    finally:
        for signal, receiver in pairs:
            signal.disconnect(receiver)


def known_queues(app: Celery, queues: Iterable[str] | None = None) -> list[str]:
    """``queues``, or the default queue and every queue the broker has seen."""
    if queues is not None:
        return list(dict.fromkeys(queues))
    return list(dict.fromkeys([str(app.conf.task_default_queue), *app.broker.queues()]))


def busy(app: Celery, queues: Iterable[str]) -> bool:
    """True while a message of ``queues`` is ready or taken by a worker."""
    broker = app.broker
    for queue in queues:
        stats = broker.stats(queue)
        if stats.ready or stats.leased:
            return True
    return False


def wait_idle(app: Celery, queues: list[str], timeout: float) -> None:
    """Wait until nothing is ready or running, twice in a row (a task that ends may have
    published more), or raise :class:`~celeriac.exceptions.TimeoutError`."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 2:
        if busy(app, queues):
            quiet = 0
        else:
            quiet += 1
        if time.monotonic() > deadline:
            left = {q: app.broker.stats(q) for q in queues}
            raise CeleriacTimeout(f"tasks still ready or running after {timeout:g}s: {left}")
        time.sleep(0.002)


def next_delayed(app: Celery, queues: Iterable[str]) -> float | None:
    """The earliest ``not_before`` (epoch seconds) waiting in ``queues``, if any."""
    dues = [item.not_before for queue in queues for item in app.broker.waiting(queue)
            if item.not_before is not None]
    return min(dues) if dues else None


@contextmanager
def controlled_clock() -> Iterator[clock.ControlledClock]:
    """The installed controlled clock, or one installed at the real now for the block."""
    current = clock.current()
    if isinstance(current, clock.ControlledClock):
        yield current
        return
    temporary = clock.ControlledClock(clock.now())
    clock.install(temporary)
    try:
        yield temporary
    finally:
        clock.install(current)


def drain(app: Celery, queues: Iterable[str] | None = None, *, with_scheduled: bool = True,
          timeout: float = 30.0) -> DrainResult:
    """Run what waits in ``queues`` (default: all known) and what it enqueues, to the end.

    Returns a :class:`DrainResult`. ``timeout`` bounds the real time spent waiting
    for one round of work (a task that never ends raises instead of hanging).
    """
    names = known_queues(app, queues)
    with record_outcomes(app) as result, \
            start_worker(app, queues=names, perform_ping_check=False, pool="solo"):
        wait_idle(app, names, timeout)
        if with_scheduled:
            with controlled_clock() as moving:
                for _step in range(MAX_STEPS):
                    due = next_delayed(app, names)
                    if due is None:
                        break
                    if due > moving.time():
                        moving.set(datetime.fromtimestamp(due, clock.UTC))
                    wait_idle(app, names, timeout)
                else:
                    raise RuntimeError(f"drain: still scheduling after {MAX_STEPS} steps "
                                       "(a task that always re-enqueues itself?)")
    return result
