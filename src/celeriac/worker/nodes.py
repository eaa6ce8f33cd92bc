"""What remote control sees of a node: :class:`InProcessNode` and :class:`PreforkNode`.

Both implement :class:`~celeriac.worker.inspection.NodeView` for the
remote-control thread. In-process pools (solo, threads, asyncio) are read from
the consumer directly (its running jobs and its buffer of received ones).
Under prefork the supervisor knows what each child runs (the child sends the
request's summary when a task starts) and which leases each child holds
(``reserved``: held, not started; their arguments are not known to the
supervisor and are reported empty). Changing the queues, the pool size or
the time limits of a prefork node restarts its children gracefully where
needed: a forked child keeps the queues it started with.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Any

from .autoscale import Autoscaler
from .child import PREFETCH_COUNTERS, fold_prefetch, read_job
from .children import kill
from .inspection import message_info
from .leases import delivery_of

if TYPE_CHECKING:
    from ..app.base import Celery
    from .consumer import Consumer
    from .main import Worker
    from .supervisor import Supervisor


class InProcessNode:
    """A solo/threads/asyncio worker: one consumer in this process."""

    def __init__(self, worker: Worker, consumer: Consumer) -> None:
        self.worker, self.consumer = worker, consumer
        self.hostname: str = worker.hostname
        self.app: Celery = worker.app

    def _info(self, job: Any, started: bool) -> dict[str, Any]:
        return message_info(job.delivery.message, job.delivery.queue, self.hostname,
                            time_start=job.started_at if started else None,
                            acknowledged=started and not job.task.acks_late,
                            worker_pid=os.getpid() if started else None,
                            redelivered=job.delivery.redelivered)

    def active(self) -> list[dict[str, Any]]:
        return [self._info(job, True) for job in list(self.consumer.runner.active.values())]

    def reserved(self) -> list[dict[str, Any]]:
        return [self._info(job, False) for job in list(self.consumer.buffer)]

    def active_count(self) -> int:
        return len(self.consumer.runner.active)

    def processed(self) -> int:
        return self.consumer.runner.processed

    def processed_by_name(self) -> dict[str, int]:
        return dict(self.consumer.runner.processed_names)

    def queues(self) -> list[str]:
        return list(self.consumer.queues)

    def add_queue(self, queue: str) -> bool:
        if queue in self.consumer.queues:
            return False
        self.consumer.queues.append(queue)
        return True

    def cancel_queue(self, queue: str) -> bool:
        if queue not in self.consumer.queues:
            return False
        self.consumer.queues.remove(queue)
        return True

    def revoke(self, ids: list[str], terminate: bool, signal: Any) -> None:
        self.worker.revoke(ids, terminate=terminate, signal=signal)

    def revoked_ids(self) -> list[str]:
        return self.consumer.revocations.told()

    def pool_stats(self) -> dict[str, Any]:
        pool = self.consumer.pool
        return {"implementation": f"celeriac.worker.pools:{pool.name}",
                "max-concurrency": pool.concurrency, "processes": [os.getpid()],
                "max-tasks-per-child": "N/A"}

    def prefetch_stats(self) -> dict[str, Any]:
        return {**self.consumer.prefetch.stats(),
                "already_done": self.consumer.runner.done_before.count}

    def _fixed(self, what: str) -> str:
        raise NotImplementedError(f"{what} is not supported by the {self.consumer.pool.name} "
                                  f"pool (its size is fixed; use prefork to resize)")

    def grow(self, n: int) -> str:
        return self._fixed("pool_grow")

    def shrink(self, n: int) -> str:
        return self._fixed("pool_shrink")

    def autoscale(self, high: int, low: int) -> str:
        return self._fixed("autoscale")

    def restart_pool(self) -> str:
        raise ValueError("Pool restarts need the prefork pool")

    def set_task_events(self, enabled: bool) -> None:
        self.app.conf.worker_send_task_events = enabled

    def shutdown(self) -> None:
        self.worker.stop()


class PreforkNode:
    """A prefork worker: the supervisor and its children."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self.hostname: str = supervisor.worker.hostname
        self.app: Celery = supervisor.app

    def _children(self) -> list[Any]:
        return list(self.sup.children.values())

    def active(self) -> list[dict[str, Any]]:
        out = []
        for child in self._children():
            if not child.slot.started:
                continue
            info = read_job(child.slot) or child.job_info
            if info and info["id"] == child.slot.task_id.decode():
                out.append(dict(info, time_start=child.slot.started,
                                worker_pid=child.process.pid))
        return out

    def reserved(self) -> list[dict[str, Any]]:
        running = {c.slot.task_id.decode() for c in self._children() if c.slot.started}
        out = []
        for book in list(self.sup.renewer.held.values()):
            for lease in list(book.values()):
                delivery = delivery_of(lease)
                if delivery.message.task_id not in running:
                    out.append(message_info(delivery.message, delivery.queue, self.hostname,
                                            time_start=None, acknowledged=False,
                                            worker_pid=None))
        return out

    def active_count(self) -> int:
        return sum(1 for c in self._children() if c.slot.started)

    def processed(self) -> int:
        return self.sup.processed_by_gone + sum(c.slot.processed for c in self._children())

    def processed_by_name(self) -> dict[str, int]:
        return dict(self.sup.started_names)

    def queues(self) -> list[str]:
        return list(self.sup.worker.queues)

    def _restart_children(self) -> None:
        for child in self._children():
            if not child.retiring:
                child.retiring = True
                kill(child.process.pid, signal.SIGTERM)

    def add_queue(self, queue: str) -> bool:
        if queue in self.sup.worker.queues:
            return False
        self.sup.worker.queues.append(queue)
        self._restart_children()
        return True

    def cancel_queue(self, queue: str) -> bool:
        if queue not in self.sup.worker.queues:
            return False
        self.sup.worker.queues.remove(queue)
        self._restart_children()
        return True

    def revoke(self, ids: list[str], terminate: bool, signal: Any) -> None:
        self.sup.revoke(ids, terminate=terminate, signal=signal)

    def revoked_ids(self) -> list[str]:
        return self.sup.revocations.told()

    def prefetch_stats(self) -> dict[str, Any]:
        """The worker's rule; the counters summed over its children (present and gone)."""
        rule = self.sup.worker.prefetch.stats()
        totals = dict(self.sup.prefetch_by_gone)
        for child in self._children():
            fold_prefetch(totals, child.slot)
        rule.pop("expected_seconds", None)  # each child has its own
        return {**rule, **{key: totals.get(key, 0) for key in PREFETCH_COUNTERS}}

    def pool_stats(self) -> dict[str, Any]:
        return {"implementation": "celeriac.worker.supervisor:prefork",
                "max-concurrency": self.sup.target,
                "processes": [c.process.pid for c in self._children()],
                "max-tasks-per-child": self.app.conf.worker_max_tasks_per_child or "N/A"}

    def _resize(self, target: int) -> None:
        """Run ``target`` children: the supervisor starts the missing ones at its next
        tick; idle ones beyond the target retire now."""
        sup = self.sup
        if sup.autoscaler is not None:
            sup.autoscaler.high = max(sup.autoscaler.high, target)
            sup.autoscaler.low = min(sup.autoscaler.low, target)
        sup.target = target
        for child in [c for c in self._children() if not c.retiring][target:]:
            if not child.slot.started:
                child.retiring = True
                kill(child.process.pid, signal.SIGTERM)

    def grow(self, n: int) -> str:
        self._resize(self.sup.target + n)
        return "pool will grow"

    def shrink(self, n: int) -> str:
        if all(c.slot.started for c in self._children() if not c.retiring):
            raise ValueError("Can't shrink pool. All processes busy!")
        self._resize(max(1, self.sup.target - n))
        return "pool will shrink"

    def autoscale(self, high: int, low: int) -> str:
        sup = self.sup
        if sup.autoscaler is None:
            sup.autoscaler = Autoscaler(self.app, sup.worker.queues, high, low)
        else:
            sup.autoscaler.high, sup.autoscaler.low = high, low
        return f"autoscale now max={high} min={low}"

    def restart_pool(self) -> str:
        if not self.app.conf.worker_pool_restarts:
            raise ValueError("Pool restarts not enabled")
        self._restart_children()
        return "reload started"

    def set_task_events(self, enabled: bool) -> None:
        self.app.conf.worker_send_task_events = enabled
        for child in self._children():
            child.slot.task_events = int(enabled)

    def shutdown(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
