"""The celeriac task that runs ``django.tasks`` functions on workers.

:class:`~celeriac.contrib.django.tasks.CeleriacBackend` sends every enqueued
Django task as ``celeriac.contrib.django.run_django_task(module_path, args,
kwargs, backend_alias, takes_context)`` with the Django task result's id as the
celeriac task id. The runner imports the task by its module path (only a
``Task`` object defined at module level is accepted, as Django requires),
records the start in the task's descriptor, sends Django's ``task_started`` and
``task_finished`` signals, and returns the JSON-normalised return value, which
celeriac stores as the task's result.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from celeriac import shared_task

RUNNER = "celeriac.contrib.django.run_django_task"


def descriptor_id(result_id: str) -> str:
    """Result-store key of the Django task descriptor of ``result_id``."""
    return f"{result_id}:django-task"


@shared_task(name=RUNNER, bind=True, typing=False)
def run_django_task(self: Any, module_path: str, args: list[Any], kwargs: dict[str, Any],
                    alias: str, takes_context: bool) -> Any:
    from django.utils.module_loading import import_string

    from .compat import tasks_modules

    package, base, _, _, dj_signals = tasks_modules()
    task = import_string(module_path)
    if not isinstance(task, base.Task):
        raise TypeError(f"{module_path} is not a django.tasks Task")
    backend = package.task_backends[alias]
    store = self.app.backend
    key = descriptor_id(self.request.id)
    desc = dict((store.get(key) or {}).get("result") or {}) if store is not None else {}
    now = datetime.now(timezone.utc).isoformat()
    desc.update(started_at=now, last_attempted_at=now,
                worker_ids=[*desc.get("worker_ids", []), self.request.hostname or "?"])
    if store is not None:
        store.set(key, {"status": "PENDING", "result": desc, "traceback": None,
                        "children": [], "date_done": None, "task_id": key})
    result = backend.get_result(self.request.id)
    dj_signals.task_started.send(sender=type(backend), task_result=result)
    try:
        if takes_context:
            value = task.call(base.TaskContext(task_result=result), *args, **kwargs)
        else:
            value = task.call(*args, **kwargs)
    finally:
        dj_signals.task_finished.send(sender=type(backend), task_result=result)
    from .compat import normalize_json

    return normalize_json(value)
