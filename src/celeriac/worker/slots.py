"""Concurrency limits in the worker: take the task's broker slot before its body runs.

A task with ``concurrency_limit`` (``serial_task`` too) runs only while its
delivery holds one place of the slot :func:`~celeriac.app.limits.slot_name`
names (:meth:`Broker.acquire_slot`: atomic across every worker, held only while
the message's lease lives, so ``kill -9`` frees it within one lease). The check
is made when the job is about to start, once a pool slot is free; a call that
finds the slot full is never kept in worker memory:

* ``on_busy="requeue"``: released to the broker, due again in ``busy_countdown``
  seconds (not a failed delivery, nothing stored);
* ``on_busy="retry"``: the tracer runs ``Task.retry(countdown=busy_countdown,
  exc=CouldNotAcquireLock(...))`` instead of the body (RETRY stored, a new
  message published, ``max_retries`` counted; FAILURE with the exception after);
* ``on_busy="skip"``: acknowledged and stored as REVOKED (``TaskRevokedError``).

The slot is released as soon as the body returned (or raised); if that call is
lost, the place frees itself when the message is acknowledged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import states
from ..app.limits import acks_late_off, slot_name
from ..exceptions import CouldNotAcquireLock, ImproperlyConfigured, TaskRevokedError
from ..results.meta import store_result

if TYPE_CHECKING:
    from ..app.context import Context
    from ..brokers.base import Broker
    from .job import Job
    from .leases import LeaseKeeper

logger = logging.getLogger("celeriac.worker")


@dataclass
class Entry:
    """What the gate decided for one job."""

    #: the slot held (released by :meth:`Slots.leave`); None when there is no limit
    name: str | None = None
    #: the slot was full
    busy: bool = False
    #: the limit could not be applied (bad key, acks_late=False): the task fails with it
    error: Exception | None = None


class Slots:
    """Takes and gives back the slots of one consumer's jobs."""

    def __init__(self, broker: Broker, keeper: LeaseKeeper) -> None:
        self.broker = broker
        self.keeper = keeper

    def enter(self, job: Job) -> Entry:
        task = job.task
        if getattr(task, "concurrency_limit", None) is None:
            return Entry()
        try:
            name = slot_name(task, tuple(job.request.args or ()), job.request.kwargs or {})
        except ValueError as exc:
            return Entry(error=exc)
        if acks_late_off(task):
            return Entry(error=ImproperlyConfigured(
                f"task {task.name}: concurrency_limit needs acks_late (the slot is held by "
                "the message's lease, which an early acknowledgement ends)"))
        limit = task.concurrency_limit
        assert name is not None and limit is not None
        if self.broker.acquire_slot(name, int(limit), job.delivery):
            return Entry(name=name)
        return Entry(name=name, busy=True)

    def leave(self, job: Job, entry: Entry) -> None:
        if entry.name is None or entry.busy:
            return
        try:
            self.broker.release_slot(entry.name, job.delivery)
        except Exception:
            logger.exception("Could not release slot %r of %s[%s]; it frees itself when the "
                             "message is acknowledged", entry.name, job.name, job.id)

    def defer(self, job: Job, entry: Entry) -> bool:
        """A busy job that does not run: requeue or skip it (True); False for ``retry``,
        which the tracer carries out with :meth:`body`."""
        task, delivery = job.task, job.delivery
        action = getattr(task, "on_busy", "requeue")
        if action == "retry":
            return False
        if action == "skip":
            logger.info("Task %s[%s] skipped: slot %r is full", job.name, job.id, entry.name)
            if not task.ignore_result:
                store_result(task.app, job.id, TaskRevokedError(
                    f"skipped: slot {entry.name!r} was full"), states.REVOKED,
                    request=job.request)
            self.broker.ack([delivery])
        else:
            delay = float(task.busy_countdown)
            logger.info("Task %s[%s] waits: slot %r is full (again in %.1fs)", job.name,
                        job.id, entry.name, delay)
            self.broker.release(delivery, not_before=time.time() + delay)
        self.keeper.drop(delivery)
        return True

    @staticmethod
    def body(job: Job, entry: Entry) -> Callable[[Context], Any]:
        """What runs instead of the body: the limit's error, or the busy retry."""

        def refuse(ctx: Context) -> Any:
            if entry.error is not None:
                raise entry.error
            task = job.task
            raise task.retry(countdown=float(task.busy_countdown), exc=CouldNotAcquireLock(
                f"Could not acquire slot {entry.name!r} for task {task.name}"))

        return refuse

    @classmethod
    def async_body(cls, job: Job, entry: Entry) -> Callable[[Context], Awaitable[Any]]:
        """:meth:`body` for the asyncio pool (raised inside the task's own context)."""
        refuse = cls.body(job, entry)

        async def refuse_async(ctx: Context) -> Any:
            return refuse(ctx)

        return refuse_async
