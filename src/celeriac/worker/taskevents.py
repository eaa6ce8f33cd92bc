"""Task events sent by the process that runs the task (Celery's ``task-*`` events).

A :class:`TaskEvents` belongs to one :class:`~celeriac.worker.job.JobRunner`
(the worker process, or each prefork child, which sends with the node's name
and the supervisor's pid, so the node looks like one process to Flower). It
sends ``task-received`` when a message passed the checks, ``task-started``,
then ``task-succeeded`` / ``task-failed`` / ``task-retried`` /
``task-rejected`` (a ``Reject`` sends ``task-failed`` then ``task-rejected``,
as Celery does) and ``task-revoked`` (expired, revoked, terminated). Fields
are Celery's (see tests/fixtures/events-redis.json). Whether task events are
sent is asked each time (``-E``, ``worker_send_task_events``, and the
``enable_events``/``disable_events`` control commands); a task whose ``send_events``
attribute is false sends none, as in Celery.

It also measures each start's **time-to-start** (``job.time_to_start``: seconds
from when the message became ready -- published, or due after its countdown --
to the start), which the worker's queue targets use, and adds it with the queue
to ``task-started`` (``queue``, ``time_to_start``: extra fields Celery's tools
ignore, from which the exporter's histograms are built).
"""

from __future__ import annotations

import time
import traceback as traceback_module
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import states
from ..events.dispatcher import EventDispatcher
from ..messages import saferepr

if TYPE_CHECKING:
    from ..app.base import Celery
    from ..app.request import Request
    from ..app.trace import Outcome
    from .job import Job

def _iso(value: Any) -> Any:
    return value if value is None or isinstance(value, str) else str(value)


def received_fields(request: Request) -> dict[str, Any]:
    """The fields of ``task-received`` (and of ``task-sent`` minus routing)."""
    return {"uuid": request.id, "name": request.name,
            "args": request.argsrepr if request.argsrepr is not None
            else saferepr(tuple(request.args or ())),
            "kwargs": request.kwargsrepr if request.kwargsrepr is not None
            else saferepr(dict(request.kwargs or {})),
            "root_id": request.root_id, "parent_id": request.parent_id,
            "retries": request.retries, "eta": _iso(request.eta),
            "expires": _iso(request.expires)}


def ready_since(job: Job) -> float | None:
    """When the job's message became ready: its ETA if it had one, else the broker's
    publish time for it (None when neither is known)."""
    eta = job.request.eta_at
    published = job.delivery.published_at
    if eta is not None and published is not None:
        return max(eta, published)
    return eta if eta is not None else published


class TaskEvents:
    """Sends the task events of one job runner."""

    def __init__(self, app: Celery, hostname: str, *, pid: int | None = None,
                 enabled: Callable[[], bool] | None = None) -> None:
        self.dispatcher = EventDispatcher(app, hostname=hostname, groups=["task"], pid=pid)
        self._enabled = enabled or (lambda: bool(app.conf.worker_send_task_events))

    @property
    def enabled(self) -> bool:
        return self._enabled()

    def sends(self, task: Any) -> bool:
        """Whether events about ``task`` are sent (None: a task this worker does not know)."""
        return self.enabled and (task is None or bool(getattr(task, "send_events", True)))

    def send(self, *events: tuple[str, dict[str, Any]], task: Any = None) -> None:
        if self.sends(task):
            self.dispatcher.send_many(list(events))

    def received(self, job: Job) -> None:
        if self.sends(job.task):
            self.dispatcher.send_many([("task-received", received_fields(job.request))])

    def started(self, job: Job) -> None:
        since = ready_since(job)
        if since is not None:
            job.time_to_start = max(0.0, time.time() - since)
        if not self.sends(job.task):
            return
        fields: dict[str, Any] = {"uuid": job.id, "queue": job.delivery.queue}
        if job.time_to_start is not None:
            fields["time_to_start"] = round(job.time_to_start, 6)
        self.dispatcher.send_many([("task-started", fields)])

    def finished(self, job: Job, outcome: Outcome) -> None:
        if not self.sends(job.task):
            return
        uid = job.id
        if outcome.state == states.SUCCESS:
            self.send(("task-succeeded", {"uuid": uid, "result": saferepr(outcome.retval),
                                          "runtime": outcome.runtime}))
        elif outcome.state in (states.FAILURE, states.RETRY, states.REJECTED):
            fields = {"uuid": uid, "exception": saferepr(outcome.exc),
                      "traceback": outcome.traceback or _format(outcome.exc)}
            if outcome.state == states.RETRY:
                self.send(("task-retried", fields))
            elif outcome.state == states.REJECTED:
                self.send(("task-failed", fields),
                          ("task-rejected", {"uuid": uid, "requeue": outcome.requeue}))
            else:
                self.send(("task-failed", fields))

    def revoked(self, task_id: str, *, terminated: bool = False, signum: int | None = None,
                expired: bool = False, task: Any = None) -> None:
        self.send(("task-revoked", {"uuid": task_id, "terminated": terminated,
                                    "signum": signum, "expired": expired}), task=task)


def _format(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    return "".join(traceback_module.format_exception(type(exc), exc, exc.__traceback__))
