"""Task registry, task creation from functions, and ``shared_task``.

``@app.task`` turns a function into a :class:`~celeriac.app.task.Task` subclass
instance registered under ``module.function`` (or ``name=``); every decorator
option becomes a class attribute, as in Celery, and a near-miss of a known
option name (``max_retires``) is reported. ``shared_task`` defines a task for
every app, present and future; the object it returns resolves to the current
app's instance (and passes ``isinstance(..., Task)``), as Celery's proxy does.
"""

from __future__ import annotations

import difflib
import inspect
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..exceptions import NotRegistered
from . import state as _state
from .annotations import annotate_task
from .limits import check_task_options
from .models import ModelCalls
from .task import Task

if TYPE_CHECKING:
    from .base import Celery

TASK_OPTIONS = {
    "name", "bind", "base", "max_retries", "default_retry_delay", "autoretry_for",
    "dont_autoretry_for", "retry_kwargs", "retry_backoff", "retry_backoff_max",
    "retry_jitter", "acks_late", "reject_on_worker_lost", "ignore_result", "time_limit",
    "soft_time_limit", "track_started", "queue", "priority", "expires", "rate_limit",
    "serializer", "typing", "on_failure", "on_success", "on_retry", "after_return",
    "before_start", "throws", "store_errors_even_if_ignored", "acks_on_failure_or_timeout",
    "acks_on_failure", "acks_on_timeout", "retry_on_worker_lost",
    "send_events", "trail", "resultrepr_maxsize", "shared", "lazy", "pydantic",
    "compression", "exchange", "routing_key", "run_every", "filter", "pydantic_strict",
    "pydantic_context", "pydantic_dump_kwargs",
    "concurrency_limit", "concurrency_key", "on_busy", "busy_countdown", "unique_for",
    "unique_key",
}


class TaskRegistry(dict):
    """Map of task name to task instance; a missing name raises NotRegistered."""

    def __missing__(self, key: str) -> Task:
        raise NotRegistered(key)

    def register(self, task: Task) -> None:
        for attr in ("Request", "Strategy"):  # Celery's worker classes: celeriac has neither
            if getattr(task, attr, None) is not None:
                warnings.warn(f"task {task.name}: a custom {attr} has no effect in celeriac "
                              "(use the task's handlers, on_failure..., or signals)",
                              stacklevel=3)
        self[task.name] = task
        app = getattr(type(task), "_app", None)
        if app is not None and app._finalized:  # finalize annotated the ones before
            annotate_task(app, task)

    def unregister(self, name: str) -> None:
        self.pop(getattr(name, "name", name), None)

    def regular(self) -> dict[str, Task]:
        return dict(self)


def task_name(fun: Callable[..., Any], name: str | None, app: Celery) -> str:
    if name:
        return name
    module = fun.__module__
    if module == "__main__" and app.main and app.main != "__main__":
        module = app.main
    return f"{module}.{fun.__name__}"


def task_from_fun(app: Celery, fun: Callable[..., Any], name: str | None = None,
                  base: type[Task] | None = None, bind: bool = False, **options: Any) -> Task:
    """Build, bind and register a Task subclass whose ``run`` is ``fun``.

    Every option becomes a class attribute, as in Celery (base classes read
    their own); a name close to a known option but not equal is reported.
    """
    full_name = task_name(fun, name, app)
    base = base or app.Task
    _warn_misspelled(options, base, fun)
    model_options = {k: options.pop(k) for k in ("pydantic_strict", "pydantic_context",
                                                 "pydantic_dump_kwargs") if k in options}
    calls, original = None, fun
    if options.pop("pydantic", False):  # Celery's pydantic=True (app/models.py)
        calls = ModelCalls(app, fun, full_name, strict=bool(model_options.get(
            "pydantic_strict", False)), context=model_options.get("pydantic_context"),
            dump_kwargs=model_options.get("pydantic_dump_kwargs"))
        fun = calls.wrap()
    run = fun if bind else staticmethod(fun)
    attrs: dict[str, Any] = {
        "name": full_name, "_app": app, "bind": bind, "run": run, "__doc__": fun.__doc__,
        "__module__": fun.__module__, "__qualname__": fun.__qualname__, "__wrapped__": run,
        "_orig_run": staticmethod(original), "__header__": staticmethod(original),
        "__annotations__": getattr(fun, "__annotations__", {}), "_model_calls": calls,
    }
    if options.get("run_every") is not None:
        warnings.warn(f"task {full_name}: run_every= has no effect on a task (nor in Celery "
                      "5); use app.periodic_task(run_every=...) or beat_schedule", stacklevel=3)
    for key in _IGNORED_OPTIONS:
        options.pop(key, None)
    attrs.update(options)
    existing = app._tasks.get(full_name)
    if existing is not None and getattr(existing, "_orig_run", None) is original:
        return existing
    cls = type(fun.__name__, (base,), attrs)
    cls.bind_app(app)  # type: ignore[attr-defined]
    task: Task = cls()
    check_task_options(task)
    app._tasks.register(task)
    return task


_IGNORED_OPTIONS = ("shared", "lazy", "filter", "run_every")


def _warn_misspelled(options: dict[str, Any], base: type[Task], fun: Callable[..., Any]) -> None:
    for key in options:
        if key in TASK_OPTIONS or hasattr(base, key):
            continue
        close = difflib.get_close_matches(key, TASK_OPTIONS, n=1, cutoff=0.8)
        if close:
            warnings.warn(f"task {fun.__qualname__}: unknown option {key!r} (did you mean "
                          f"{close[0]!r}?); it is set as a plain attribute", stacklevel=4)


class SharedTask:
    """What ``@shared_task`` returns: the current app's instance of a shared task."""

    def __init__(self, name: str, make: Callable[[Celery], Task]) -> None:
        self._name = name
        self._make = make

    def _resolve(self) -> Task:
        app = _state.get_current_app()
        task = app._tasks.get(self._name)
        if task is None:
            task = self._make(app)
        return task

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._resolve(), attr)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # ``isinstance(shared, Task)`` holds, as in Celery
        return type(self._resolve())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return repr(self._resolve())


def shared_task(*args: Any, **options: Any) -> Any:
    """Define a task usable from any app (Django apps use this)."""

    def create(fun: Callable[..., Any]) -> SharedTask:
        holder: dict[str, str] = {}

        def make(app: Celery) -> Task:
            task = task_from_fun(app, fun, **options)
            holder["name"] = task.name or ""
            return task

        for app in _state.all_apps():
            make(app)
        _state.connect_on_app_finalize(make)
        name = options.get("name") or f"{fun.__module__}.{fun.__name__}"
        return SharedTask(holder.get("name", name), make)

    if len(args) == 1 and callable(args[0]):
        return create(args[0])
    if args:
        raise TypeError("shared_task() takes keyword options only")
    return create


def is_task_function(obj: Any) -> bool:
    return inspect.isfunction(obj) or inspect.iscoroutinefunction(obj)


def periodic_task(*args: Any, run_every: Any = None, **options: Any) -> Any:
    """Module-level ``@periodic_task`` (Celery 3's decorator): a task plus its beat entry."""
    return _state.get_current_app().periodic_task(*args, run_every=run_every, **options)
