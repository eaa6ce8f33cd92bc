"""The current app and current task: the only process-wide state Celery's API needs.

``current_app`` is the app most recently created (or set with
``set_as_current``); ``shared_task`` binds to every app created. The current
task is tracked per thread/asyncio-task with a context variable.
"""

from __future__ import annotations

import contextvars
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Celery
    from .task import Task

_lock = threading.RLock()
_current_app: Celery | None = None
_apps: weakref.WeakSet[Celery] = weakref.WeakSet()
#: Callbacks run for every app, present and future (shared_task uses this).
_on_app_finalizers: list[Callable[[Celery], Any]] = []
#: Makes the app ``current_app`` returns when none was created yet; set by
#: :mod:`celeriac.app.base` (which defines ``Celery``) when it is imported.
_default_app_factory: Callable[[], Celery] | None = None
_task_stack: contextvars.ContextVar[tuple[Task, ...]] = contextvars.ContextVar(
    "celeriac_task_stack", default=())


def register_app(app: Celery, set_as_current: bool = True) -> None:
    global _current_app
    with _lock:
        _apps.add(app)
        if set_as_current:
            _current_app = app


def set_current_app(app: Celery) -> None:
    global _current_app
    _current_app = app


def set_default_app_factory(factory: Callable[[], Celery]) -> None:
    global _default_app_factory
    _default_app_factory = factory


def get_current_app() -> Celery:
    global _current_app
    with _lock:
        if _current_app is None:
            if _default_app_factory is None:
                raise RuntimeError("no celeriac app: import celeriac and create Celery()")
            _current_app = _default_app_factory()
        return _current_app


def all_apps() -> list[Celery]:
    return list(_apps)


def connect_on_app_finalize(callback: Callable[[Celery], Any]) -> Callable[[Celery], Any]:
    _on_app_finalizers.append(callback)
    return callback


def app_finalizers() -> list[Callable[[Celery], Any]]:
    return list(_on_app_finalizers)


def push_task(task: Task) -> contextvars.Token[tuple[Task, ...]]:
    return _task_stack.set((*_task_stack.get(), task))


def pop_task(token: contextvars.Token[tuple[Task, ...]]) -> None:
    _task_stack.reset(token)


def get_current_task() -> Task | None:
    stack = _task_stack.get()
    return stack[-1] if stack else None


def get_current_worker_task() -> Task | None:
    for task in reversed(_task_stack.get()):
        if not task.request.called_directly and not task.request.is_eager:
            return task
    return None


class _Proxy:
    """A lazy proxy to the object a getter returns (``current_app``)."""

    def __init__(self, getter: Callable[[], Any]) -> None:
        object.__setattr__(self, "_getter", getter)

    def _get(self) -> Any:
        return object.__getattribute__(self, "_getter")()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._get(), name, value)

    def __repr__(self) -> str:
        return repr(self._get())

    def __bool__(self) -> bool:
        return bool(self._get())

    def __eq__(self, other: object) -> bool:
        return bool(self._get() == other)

    def __hash__(self) -> int:
        return hash(self._get())


current_app: Any = _Proxy(get_current_app)
current_task: Any = _Proxy(get_current_task)
