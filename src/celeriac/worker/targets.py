"""Per-queue time-to-start in the worker: breaches of ``task_queue_targets`` and a summary.

:class:`TargetWatch` gets every start's time-to-start (in-process pools from
the consumer's monitor, prefork from the children through the supervisor). A
start over its queue's target is logged as a warning naming the task, the queue,
the time and the target. :meth:`TargetWatch.summary` gives, per queue, the
number of starts, the 95th percentile and maximum over the last
:data:`WINDOW` seconds, the breaches since start-up and the target; the node's
heartbeat record carries it, and ``celeriac status`` shows it per queue.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..config.targets import describe, queue_targets

if TYPE_CHECKING:
    from ..app.base import Celery

logger = logging.getLogger("celeriac.worker.targets")

WINDOW = 300.0
MAX_SAMPLES = 4096


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


class TargetWatch:
    """Time-to-start samples by queue, checked against the queues' targets."""

    def __init__(self, app: Celery, *, log: bool = True) -> None:
        self.targets = queue_targets(app.conf.task_queue_targets)
        self.log = log
        self._samples: dict[str, collections.deque[tuple[float, float]]] = {}
        self._breaches: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def observe(self, queue: str, name: str, task_id: str, seconds: float | None) -> None:
        if seconds is None:
            return
        now = time.time()
        with self._lock:
            samples = self._samples.setdefault(queue, collections.deque(maxlen=MAX_SAMPLES))
            samples.append((now, seconds))
            target = self.targets.get(queue)
            if target is not None and seconds > target:
                self._breaches[queue] += 1
        if self.log and target is not None and seconds > target:
            logger.warning("Task %s[%s] started %.1fs after it became ready on queue %s: "
                           "over the queue's time-to-start target of %s", name, task_id,
                           seconds, queue, describe(target))

    def observe_all(self, starts: Iterable[tuple[str, str, str, float | None]],
                    by_name: collections.Counter[str]) -> None:
        """A prefork child's batch of starts ``(name, queue, task id, seconds)``; each one
        is also counted by task name in ``by_name``."""
        for name, queue, task_id, seconds in starts:
            by_name[name] += 1
            self.observe(queue, name, task_id, seconds)

    def summary(self) -> dict[str, dict[str, Any]]:
        horizon = time.time() - WINDOW
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for queue in set(self._samples) | set(self.targets):
                recent = [s for t, s in self._samples.get(queue, ()) if t >= horizon]
                out[queue] = {
                    "count": len(recent),
                    "p95": round(percentile(recent, 0.95), 3) if recent else None,
                    "max": round(max(recent), 3) if recent else None,
                    "breaches": self._breaches[queue], "target": self.targets.get(queue)}
        return out
