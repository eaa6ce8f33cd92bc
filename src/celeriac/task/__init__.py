"""Celery 3's ``celery.task`` decorators, and CommCare's ``serial_task``.

``from celeriac.task import task, periodic_task, serial_task`` (the path Celery 3
and 4 users wrote as ``celery.task``, and CommCare HQ's decorators):

* :func:`task`: a task defined for every app (``shared_task``);
* :func:`periodic_task`: a task plus its beat entry (``run_every=crontab(...)`` or
  a ``timedelta``/seconds; ``queue=``, ``options=``) on the current app;
* :func:`serial_task`: at most one run at a time per key across every worker of
  the broker (``concurrency_limit=1`` keyed by ``unique_key``), the lock held by
  the message's lease (see :mod:`celeriac.app.limits` and docs/commcare.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..app.registry import periodic_task, shared_task
from ..app.task import Task

__all__ = ["Task", "periodic_task", "serial_task", "task"]


def task(*args: Any, **options: Any) -> Any:
    """``@task`` / ``@task(**options)``: a task defined for every app."""
    return shared_task(*args, **options)


def serial_task(unique_key: str | Callable[..., str], default_retry_delay: float = 30,
                timeout: float | None = None, max_retries: int | None = 3,
                queue: str | None = None, ignore_result: bool = True,
                on_busy: str = "retry", **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """Decorator: a task of which at most one run per key runs at a time, cluster-wide.

    ``unique_key`` is a ``str.format`` template over the call's arguments
    (``"{domain}-{0}"``) or a callable taking them; the lock is the slot
    ``"<task name>:<key>"``. A call that finds it held does what ``on_busy`` says:
    ``"retry"`` (CommCare's behaviour, the default: ``Task.retry`` after
    ``default_retry_delay`` seconds, at most ``max_retries`` times, then FAILURE
    with :class:`~celeriac.exceptions.CouldNotAcquireLock`), ``"requeue"`` (wait in
    the broker, re-checked every ``default_retry_delay`` seconds, for as long as it
    takes) or ``"skip"`` (dropped, stored as REVOKED). ``timeout`` (seconds) is the
    run's hard time limit: the lock lives exactly as long as the run, so bounding
    the run is what bounds the lock. ``queue`` and the other options are task
    options; like CommCare's, results are ignored unless ``ignore_result=False``.
    """

    def decorate(fun: Callable[..., Any]) -> Any:
        opts: dict[str, Any] = {
            "concurrency_limit": 1, "concurrency_key": unique_key, "on_busy": on_busy,
            "busy_countdown": float(default_retry_delay),
            "default_retry_delay": default_retry_delay, "max_retries": max_retries,
            "ignore_result": ignore_result, **options}
        if queue is not None:
            opts["queue"] = queue
        if timeout is not None:
            opts["time_limit"] = timeout
        return shared_task(**opts)(fun)

    return decorate
