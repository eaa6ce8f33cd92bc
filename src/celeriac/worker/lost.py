"""Deliveries lost with their worker: run again, retried, or dead-lettered as ``worker_lost``.

A message comes back with a lost count when its worker died holding it (a prefork child
killed, a worker process gone, a lease that lapsed) or gave it back as a failed delivery.
:meth:`LostRule.verdict` decides, once, before anything else of the delivery:

* ``retry_on_worker_lost`` (Celery 5.7's task option, else ``task_retry_on_worker_lost``):
  as Celery, the task is retried the way ``self.retry()`` would: a new message with
  ``retries + 1`` after ``default_retry_delay`` seconds, ``RETRY``/``WorkerLostError``
  stored, ``on_retry`` and ``task_retry`` called, the lost message acknowledged
  (:meth:`LostRule.retry`). It wins over ``reject_on_worker_lost`` and the redelivery
  limit (each retry is a fresh message; ``max_retries`` bounds them, ``None`` retries
  for ever, as ``self.retry()`` does). Once ``max_retries`` is reached, or when the retry
  cannot be sent, the task ends as ``FAILURE``/``WorkerLostError`` with its message
  dead-lettered as ``worker_lost`` (Celery acknowledges it: celeriac keeps it so it can
  be retried by hand). A redelivered task whose outcome is already stored is
  acknowledged without retrying (:mod:`.redelivery`, as Celery's success check).
* the redelivery limit (``worker_max_redeliveries``) reached, or an explicit
  ``reject_on_worker_lost=False``: dead-lettered as ``worker_lost`` with
  ``FAILURE``/``WorkerLostError`` (:meth:`LostRule.dead`);
* otherwise it runs again (at least once).

A message back after a run over its hard limit (requeued with ``acks_on_timeout`` false,
or a killed prefork child's message on RabbitMQ, see :mod:`.timeouts`) also has a lost
count; its stored ``TimeLimitExceeded`` tells it apart (read only for tasks with a hard
limit), and the rules of time limits apply to it, not those of lost workers.
"""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING

from .. import signals, states
from ..app.task_retry import retry_signature
from ..app.trace import ExceptionInfo
from ..canvas.callbacks import fail_outside_tracer
from ..exceptions import Retry, WorkerLostError
from ..results.meta import store_result
from .timeouts import dead_detail, timed_out_before, timeout_flag

if TYPE_CHECKING:
    from ..app.base import Celery
    from ..app.request import Request
    from ..app.task import Task
    from ..brokers import base
    from ..messages import Message

logger = logging.getLogger("celeriac.worker")


class Verdict(enum.Enum):
    RUN = "run"
    RETRY = "retry"
    DEAD = "dead"
    #: back after a timed-out run whose acknowledgement did not take effect: acknowledge
    ACKED = "acked"
    #: back after timed-out runs up to the redelivery limit: dead-letter as ``time_limit``
    TIMED_OUT = "timed_out"


RUN, RETRY, DEAD, ACKED, TIMED_OUT = (Verdict.RUN, Verdict.RETRY, Verdict.DEAD, Verdict.ACKED,
                                      Verdict.TIMED_OUT)


class LostRule:
    """The rule of one job runner (see the module docstring)."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.max_redeliveries = int(app.conf.worker_max_redeliveries)

    def verdict(self, delivery: base.Delivery, task: Task, request: Request) -> Verdict:
        if not delivery.lost_count:
            return Verdict.RUN
        if timed_out_before(self.app, delivery, task, request.timelimit[0] or task.time_limit):
            return self._timed_out(delivery, task, request)
        retry = bool(task.retry_on_worker_lost)
        if retry:
            limit = task.max_retries
            return Verdict.RETRY if limit is None or request.retries < limit else Verdict.DEAD
        if 0 < self.max_redeliveries <= delivery.lost_count or task.reject_on_worker_lost \
                is False:
            # explicit reject_on_worker_lost=False keeps Celery's "never re-run after a
            # worker loss", quarantined in the dead-letter store instead of dropped
            return Verdict.DEAD
        return Verdict.RUN

    def _timed_out(self, delivery: base.Delivery, task: Task, request: Request) -> Verdict:
        """Back after a run over its hard limit, not lost (see :mod:`.timeouts`)."""
        if timeout_flag(task) is None:
            logger.info("Task %s[%s] came back after its time limit: acknowledged without "
                        "running it again", request.task, request.id)
            return Verdict.ACKED
        if 0 < self.max_redeliveries <= delivery.lost_count:
            return Verdict.TIMED_OUT
        return Verdict.RUN

    def timed_out(self, delivery: base.Delivery, task: Task) -> str:
        """The dead-letter detail of a :data:`TIMED_OUT` delivery (its outcome is stored)."""
        return dead_detail(delivery.lost_count, timeout_flag(task))

    def dead(self, delivery: base.Delivery, message: Message, request: Request,
             task: Task) -> str:
        """Record ``FAILURE``/``WorkerLostError``; the dead-letter detail to use."""
        retried = bool(task.retry_on_worker_lost)
        exc = WorkerLostError(
            f"Worker exited prematurely while running {request.task}[{request.id}] "
            + (f"(retries exhausted: {request.retries} of max_retries={task.max_retries})"
               if retried else f"({delivery.lost_count} times)") + ": message dead-lettered")
        try:
            fail_outside_tracer(self.app, message, exc)
        except Exception:  # the dead letter matters more than the recorded failure
            logger.exception("Could not record WorkerLostError for %s", request.id)
        if retried:
            return (f"lost with its worker after {request.retries} retries "
                    f"(retry_on_worker_lost, max_retries={task.max_retries})")
        return f"{delivery.lost_count} deliveries lost with their worker or not settled"

    def retry(self, delivery: base.Delivery, request: Request, task: Task) -> bool:
        """Send the retry of a lost task and store ``RETRY``; False if it could not be
        sent (the caller dead-letters the message, as Celery falls back)."""
        countdown = task.default_retry_delay
        exc = WorkerLostError(f"Worker exited prematurely while running {request.task}"
                              f"[{request.id}]: retried (retry_on_worker_lost)")
        try:
            retry_signature(task, request, None, None, request.retries + 1, None, countdown,
                            {}).apply_async()
        except Exception:
            logger.exception("Failed to retry task %s[%s] after its worker was lost",
                             request.task, request.id)
            return False
        einfo = ExceptionInfo(exc)
        if not (task.ignore_result or request.ignore_result):
            try:
                store_result(self.app, str(request.id), exc, states.RETRY,
                             traceback=einfo.traceback, request=request)
            except Exception:  # the retry is sent: its run stores the outcome
                logger.exception("Could not store RETRY for %s", request.id)
        reason = Retry(exc=exc, when=countdown)
        task.push_request(request)
        try:
            task.on_retry(exc, request.id, request.args, request.kwargs, einfo)
            signals.task_retry.send(sender=task, request=request, reason=reason, einfo=einfo)
        except Exception:
            logger.exception("Task %s[%s]: on_retry raised", request.task, request.id)
        finally:
            task.pop_request()
        logger.info("Task %s[%s] retry: %s", request.task, request.id, reason)
        return True
