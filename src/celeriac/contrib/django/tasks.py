"""A ``django.tasks`` backend: ``@task`` functions run on celeriac workers.

``TASKS = {"default": {"BACKEND": "celeriac.contrib.django.tasks.CeleriacBackend"}}``.
``my_task.enqueue(...)`` publishes a celeriac message (the result id is the
celeriac task id); any celeriac worker of the project runs it
(:mod:`.runner`); ``my_task.get_result(id)``, ``result.refresh()`` and the
async twins read the state from the app's result store. The backend supports
``run_after`` (an ETA waiting in the broker), priorities (Django's -100..100,
higher first, mapped onto celeriac's 0..9, 0 first), queues (Django's
``"default"`` queue is the app's ``task_default_queue``) and ``async def``
tasks. ``OPTIONS``: ``{"APP": "proj.celery:app"}`` (default: the current app).

Works with Django 6's ``django.tasks`` and with the ``django_tasks`` backport on
older Django; importing this module without either raises ImproperlyConfigured
saying what to install.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from celeriac import states
from celeriac.app import state as _state

from .compat import exception, tasks_modules
from .runner import RUNNER, descriptor_id

_package, _base, _backends_base, _exceptions, _signals = tasks_modules()
TaskResult, TaskResultStatus, TaskError = _base.TaskResult, _base.TaskResultStatus, _base.TaskError
ResultDoesNotExist = exception(_exceptions, "TaskResultDoesNotExist", "ResultDoesNotExist")

_STATUS = {states.SUCCESS: "SUCCESSFUL", states.FAILURE: "FAILED", states.REVOKED: "FAILED",
           states.STARTED: "RUNNING"}


def celeriac_priority(priority: int) -> int | None:
    """Django's priority (-100 lowest .. 100 highest, 0 default) as celeriac's (0 first)."""
    if priority == _base.DEFAULT_TASK_PRIORITY:
        return None
    return round((_base.TASK_MAX_PRIORITY - priority) * 9
                 / (_base.TASK_MAX_PRIORITY - _base.TASK_MIN_PRIORITY))


def _when(value: Any) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class CeleriacBackend(_backends_base.BaseTaskBackend):  # type: ignore[name-defined]
    """Runs Django tasks on celeriac workers, results in the celeriac result store."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self._app_ref = self.options.get("APP")

    @property
    def app(self) -> Any:
        if self._app_ref:
            from celeriac.cli.base import load_app  # only here: web processes skip the CLI

            return load_app(str(self._app_ref))
        return _state.get_current_app()

    def _queue(self, name: str) -> str:
        return str(self.app.conf.task_default_queue) if name == _package.DEFAULT_TASK_QUEUE_NAME \
            else name

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        self.validate_task(task)
        app = self.app
        result_id = str(uuid.uuid4())
        now = datetime.now(timezone.utc)
        result = TaskResult(task=task, id=result_id, status=TaskResultStatus.READY,
                            enqueued_at=now, started_at=None, last_attempted_at=None,
                            finished_at=None, args=list(args), kwargs=dict(kwargs),
                            backend=self.alias, errors=[], worker_ids=[])
        store = app.backend
        if store is None:
            from django.core.exceptions import ImproperlyConfigured

            raise ImproperlyConfigured("CeleriacBackend needs a result backend (result_backend)")
        store.set(descriptor_id(result_id), {
            "status": states.PENDING, "traceback": None, "children": [], "date_done": None,
            "task_id": descriptor_id(result_id), "result": {
                "module_path": task.module_path, "args": result.args, "kwargs": result.kwargs,
                "priority": task.priority, "queue_name": task.queue_name,
                "run_after": task.run_after.isoformat() if task.run_after else None,
                "takes_context": task.takes_context, "enqueued_at": now.isoformat(),
                "worker_ids": []}})
        app.send_task(RUNNER, args=[task.module_path, result.args, result.kwargs, self.alias,
                                    task.takes_context],
                      task_id=result_id, queue=self._queue(task.queue_name),
                      priority=celeriac_priority(task.priority), eta=task.run_after)
        _signals.task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> Any:
        from django.utils.module_loading import import_string

        store = self.app.backend
        desc_meta = store.get(descriptor_id(result_id)) if store is not None else None
        if not desc_meta:
            raise ResultDoesNotExist(result_id)
        desc: dict[str, Any] = desc_meta.get("result") or {}
        meta: dict[str, Any] = store.get(result_id) or {}
        state = meta.get("status") or states.PENDING
        status = _STATUS.get(state, "RUNNING" if desc.get("started_at") else "READY")
        task = import_string(desc["module_path"])
        task = task.using(priority=desc.get("priority"), queue_name=desc.get("queue_name"),
                          run_after=_when(desc.get("run_after")), backend=self.alias)
        finished = _when(meta.get("date_done")) if status in ("SUCCESSFUL", "FAILED") else None
        errors = []
        if status == "FAILED":
            stored = meta.get("result")
            exc: dict[str, Any] = stored if isinstance(stored, dict) else {}
            path = f"{exc.get('exc_module') or 'builtins'}.{exc.get('exc_type') or 'Exception'}"
            errors.append(TaskError(exception_class_path=path,
                                    traceback=meta.get("traceback") or ""))
        result = TaskResult(task=task, id=result_id, status=TaskResultStatus[status],
                            enqueued_at=_when(desc.get("enqueued_at")),
                            started_at=_when(desc.get("started_at")) or finished,
                            last_attempted_at=_when(desc.get("last_attempted_at")) or finished,
                            finished_at=finished, args=desc.get("args") or [],
                            kwargs=desc.get("kwargs") or {}, backend=self.alias, errors=errors,
                            worker_ids=list(desc.get("worker_ids") or []))
        if status == "SUCCESSFUL":
            object.__setattr__(result, "_return_value", meta.get("result"))
        return result
