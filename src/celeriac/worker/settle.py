"""Settling messages after a run: batched acknowledgements and results, the outcome rules.

:class:`AckBatcher` collects acknowledgements so a consumer sends them with its
next lease request; :class:`ResultBatcher` collects plain SUCCESS results so
they are stored in one ``set_many`` before those acknowledgements go out.
:func:`settle` decides what an outcome means for the message (``acks_late``):

* success, failure, retry (published first), ignore: acknowledged;
* ``Reject(requeue=True)``: released to the queue (a deliberate requeue, as
  in Celery; it does not count as a failed delivery);
* ``Reject(requeue=False)``: dead-lettered as ``rejected``;
* a failure with ``acks_on_failure=False`` (Celery 5.7's; unset, it follows
  ``acks_on_failure_or_timeout``): dead-lettered as ``rejected`` (Celery rejects
  without requeue: dropped, or dead-lettered on RabbitMQ; requeueing it would run it
  forever);
* a hard time limit (``TimeLimitExceeded``) with ``acks_on_timeout`` false: requeued as
  a failed delivery, dead-lettered as ``time_limit`` at the redelivery limit
  (:mod:`.timeouts`, which the prefork supervisor follows too).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .. import states
from ..brokers import base
from ..exceptions import TimeLimitExceeded
from ..utils.log import bounded
from .timeouts import requeue_timed_out, timeout_flag

if TYPE_CHECKING:
    from ..app.base import Celery
    from ..app.task import Task
    from ..app.trace import Outcome
    from .leases import LeaseKeeper

logger = logging.getLogger("celeriac.worker")


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
            logger.warning("%d acknowledgement(s) not applied: the lease was lost (another "
                           "worker owns the message now, or the broker connection or channel "
                           "that delivered it closed); it will be delivered again",
                           len(batch) - done)

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
    """Collects plain SUCCESS results so they are stored several per ``set_many``.

    Where jobs run on the consumer's own thread (solo, prefork children) a job
    only adds its result (:meth:`add`): it waits at most until the next loop turn (or
    the consumer's watcher thread, while a long job runs). Where jobs run on
    threads (threads, asyncio) each job calls :meth:`store`, a group commit: its
    result goes with those other jobs added meanwhile, in one write. Either way a
    result is stored before the acknowledgement of its message is sent (see the
    consumer's ``_settled``): one write at a time, and a result taken by a write
    is stored, or back in the pending list, when that write ends.
    """

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._writing = threading.Lock()

    def add(self, task_id: str, meta: dict[str, Any]) -> None:
        with self._lock:
            self._pending.append((task_id, meta))

    def __len__(self) -> int:
        return len(self._pending)

    def store(self, task_id: str, meta: dict[str, Any]) -> None:
        """Add a result and return once it is stored (by this call or a concurrent one)."""
        self.add(task_id, meta)
        self.flush()

    @contextlib.contextmanager
    def carried(self) -> Iterator[list[tuple[str, dict[str, Any]]]]:
        """The pending results, for a caller that stores them itself (the broker's
        ``settle_and_receive``) inside the block: as :meth:`flush`, one write at a
        time, and back to pending if the block raises. Call :meth:`report` with what
        was written."""
        with self._writing:
            with self._lock:
                batch, self._pending = self._pending, []
            try:
                yield batch
            except BaseException:
                with self._lock:
                    self._pending[:0] = batch
                raise

    @staticmethod
    def report(batch: list[tuple[str, dict[str, Any]]], written: list[bool]) -> None:
        for (task_id, _), ok in zip(batch, written or (), strict=False):
            if not ok:
                logger.info("Result of %s not stored: the task was revoked (REVOKED stays)",
                            task_id)

    def flush(self) -> None:
        """Store the pending results; they stay pending if the store fails."""
        with self._writing:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch or self.app.backend is None:
                return
            try:
                written = self.app.backend.set_many(
                    batch, expires=self.app.result_expires_for(states.SUCCESS))
            except BaseException:
                with self._lock:
                    self._pending[:0] = batch
                raise
        self.report(batch, written)


def settle(broker: base.Broker, acks: AckBatcher, d: base.Delivery, outcome: Outcome,
           task: Task, *, batch: bool) -> bool:
    """Acknowledge, requeue or dead-letter after the run (acks_late).

    Every broker call is fenced by the lease token: if another worker owns the
    message now, nothing happens and it is only logged. A plain acknowledgement
    is queued on ``acks`` (True is returned: the batcher drops the lease once the
    ack is sent; ``batch=False`` sends it now).
    """
    if outcome.state == states.REJECTED:
        done = (broker.release(d) if outcome.requeue
                else broker.dead_letter(d, f"{base.REJECTED}: {outcome.exc}"))
    elif (outcome.state == states.FAILURE and isinstance(outcome.exc, TimeLimitExceeded)
          and timeout_flag(task)):
        done = requeue_timed_out(broker, d, task, int(task.app.conf.worker_max_redeliveries))
    elif outcome.state == states.FAILURE and (flag := failure_flag(task, outcome.exc)):
        done = broker.dead_letter(d, f"{base.REJECTED}: failed with {outcome.exc!r:.200} "
                                     f"({flag}=False)")
    else:
        acks.add(d)
        if not batch:
            acks.flush()
        return True
    if not done:
        logger.warning("Not settling %s[%s]: lease lost, another worker owns it now",
                       task.name, d.message.task_id)
    return False


def failure_flag(task: Task, exc: BaseException | None) -> str | None:
    """The task option that says not to acknowledge this failure, if one does (a time
    limit: :func:`~.timeouts.timeout_flag`)."""
    if isinstance(exc, TimeLimitExceeded):
        return timeout_flag(task)
    if task.acks_on_failure is not None:
        return None if task.acks_on_failure else "acks_on_failure"
    return "acks_on_failure_or_timeout" if task.acks_on_failure_or_timeout is False else None


def log_outcome(name: str, tid: str, task: Task, outcome: Outcome) -> None:
    """The worker's log line for a finished task (Celery's wording)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    if outcome.state == states.SUCCESS:
        logger.info("Task %s[%s] succeeded in %.6fs: %s", name, tid, outcome.runtime,
                    bounded(outcome.retval, task))
    elif outcome.state == states.FAILURE:
        logger.info("Task %s[%s] failed in %.6fs: %s", name, tid, outcome.runtime,
                    bounded(outcome.exc, task))
    elif outcome.state == states.REJECTED:
        logger.info("Task %s[%s] rejected (requeue=%s): %s", name, tid, outcome.requeue,
                    bounded(outcome.exc, task, str))
    elif outcome.state == states.IGNORED:
        logger.info("Task %s[%s] ignored", name, tid)
