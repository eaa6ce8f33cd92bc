"""What a task over its hard time limit means for its message, the same on every pool.

A task killed (prefork: the supervisor's SIGKILL) or stopped (solo, threads, asyncio:
``TimeLimitExceeded`` raised in its thread or at its ``await``) at its hard limit is
recorded ``FAILURE``/``TimeLimitExceeded``, as in Celery. Then, for ``acks_late``
tasks, Celery 5.7's ``acks_on_timeout`` decides, resolved as Celery resolves it
(:func:`timeout_flag`): the task option, else the ``task_acks_on_timeout`` setting,
else ``acks_on_failure_or_timeout`` (option, else setting), else ``True``.

* true: the message is acknowledged (the task ran to its limit; it is not run again);
* false: Celery requeues it, with no bound: a task that always passes its limit runs
  forever. celeriac requeues it too, as a failed delivery (it counts towards
  ``worker_max_redeliveries``, like a lost worker), and the run that would reach
  that limit dead-letters the message instead, with the reason ``time_limit``, so
  it can be inspected and retried by hand (:func:`requeue_timed_out`).
  ``worker_max_redeliveries=0`` (no limit) requeues forever, as Celery.

A requeued message comes back with a lost count; :func:`timed_out_before` tells it
from a delivery lost with its worker (its stored outcome is ``TimeLimitExceeded``), so
``reject_on_worker_lost=False`` and ``retry_on_worker_lost`` do not treat it as one
(:mod:`.lost`). Where the supervisor could not settle a killed child's message (RabbitMQ:
a lease belongs to the receiving connection, which the kill closed, and the message comes
back by itself), its next receiver settles it the same way: acknowledged without running
when ``acks_on_timeout`` is true, else run again or, at the limit, dead-lettered.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .. import states
from ..brokers import base

if TYPE_CHECKING:
    from ..app.task import Task

logger = logging.getLogger("celeriac.worker")

#: the exception type name of a stored time-limit failure
TIMED_OUT = "TimeLimitExceeded"


def timeout_flag(task: Task) -> str | None:
    """The option that says not to acknowledge a timed-out run (None: acknowledge)."""
    flag = getattr(task, "acks_on_timeout", None)
    if flag is not None:
        return None if flag else "acks_on_timeout"
    return "acks_on_failure_or_timeout" if task.acks_on_failure_or_timeout is False else None


def dead_detail(runs: int, flag: str | None) -> str:
    """The dead-letter detail of a task dead-lettered after ``runs`` timed-out runs."""
    return f"exceeded its time limit in {runs} runs ({flag}=False)"


def requeue_timed_out(broker: base.Broker, d: base.Delivery, task: Task,
                      max_redeliveries: int) -> bool:
    """Requeue a timed-out run's message (a failed delivery), or dead-letter it as
    ``time_limit`` when this run reaches ``max_redeliveries``; False: the lease was lost
    (on RabbitMQ the supervisor never holds a child's lease: the killed child's message
    comes back by itself, and its next receiver applies :func:`timed_out_before`)."""
    runs, flag = d.lost_count + 1, timeout_flag(task)
    if 0 < max_redeliveries <= runs:
        logger.error("Task %s[%s] exceeded its time limit %d times (%s=False): "
                     "dead-lettering its message", task.name, d.message.task_id, runs, flag)
        return broker.dead_letter(d, f"{base.TIME_LIMIT}: {dead_detail(runs, flag)}")
    done = broker.release(d, failed=True)
    if done:
        logger.warning("Task %s[%s] exceeded its time limit: message requeued (%s=False; "
                       "run %d%s)", task.name, d.message.task_id, flag, runs,
                       f" of at most {max_redeliveries}" if max_redeliveries > 0 else "")
    return done


def stored_timeout(meta: dict[str, Any] | None) -> bool:
    """True when ``meta`` is a stored ``FAILURE``/``TimeLimitExceeded``."""
    if not meta or meta.get("status") != states.FAILURE:
        return False
    result = meta.get("result")
    return isinstance(result, dict) and result.get("exc_type") == TIMED_OUT


def timed_out_before(app: Any, d: base.Delivery, task: Task, hard: Any) -> bool:
    """True when ``d`` came back after a run over its hard limit (``hard``: the message's
    or the task's, read only when there is one): requeued (``acks_on_timeout`` false),
    or, on RabbitMQ, given back by the killed child's connection whatever the flag."""
    if not d.lost_count or not hard or app.backend is None:
        return False
    try:
        return stored_timeout(app.backend.get(str(d.message.task_id)))
    except Exception as exc:  # cannot tell: treat it as lost, as before
        logger.debug("Could not read the stored outcome of %s: %s", d.message.task_id, exc)
        return False
