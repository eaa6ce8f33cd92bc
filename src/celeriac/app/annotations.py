"""``task_annotations`` (Celery's): task attributes set from the configuration.

A mapping from a task name (or ``"*"``, every task) to attributes, an object
with ``annotate(task)`` returning such a mapping (or ``None``), a dotted path
to either, or a list of them: ``{"tasks.add": {"rate_limit": "10/m"}}``. As in
Celery, the first source that annotates a task by name applies, then the first
with a ``"*"`` entry. Applied to every registered task when the app is
finalized (before a worker starts its pool), and to a task registered later when
it is registered (Celery annotates each task as it binds it). Method annotations (keys starting
with ``@``, Celery's ``add_around``) are refused with an error naming them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..exceptions import ImproperlyConfigured
from .loaders import import_object

if TYPE_CHECKING:
    from .base import Celery
    from .task import Task


def _sources(app: Celery) -> list[Any]:
    configured = app.conf.get("task_annotations")
    if not configured:
        return []
    items = configured if isinstance(configured, (list, tuple)) else [configured]
    return [import_object(item) if isinstance(item, str) else item for item in items]


def _by_name(source: Any, task: Task) -> Mapping[str, Any] | None:
    if isinstance(source, Mapping):
        found = source.get(task.name)
        return dict(found) if found is not None else None
    return source.annotate(task)


def _for_any(source: Any) -> Mapping[str, Any] | None:
    if isinstance(source, Mapping):
        found = source.get("*")
        return dict(found) if found is not None else None
    annotate_any = getattr(source, "annotate_any", None)
    return annotate_any() if annotate_any is not None else None


def apply_annotations(app: Celery) -> None:
    """Set the configured attributes on every task of ``app``."""
    sources = _sources(app)
    if not sources:
        return
    for task in list(app.tasks.values()):
        _annotate(sources, task)


def annotate_task(app: Celery, task: Task) -> None:
    """Set the configured attributes on ``task``, registered after the app was finalized."""
    sources = _sources(app)
    if sources:
        _annotate(sources, task)


def _annotate(sources: list[Any], task: Task) -> None:
    named = next((a for a in (_by_name(s, task) for s in sources) if a), None)
    anyone = next((a for a in (_for_any(s) for s in sources) if a), None)
    for attrs in (named, anyone):
        for key, value in (attrs or {}).items():
            if key.startswith("@"):
                raise ImproperlyConfigured(
                    f"task_annotations for {task.name}: {key!r}: method annotations "
                    "are not supported; set attributes (rate_limit, time_limit...)")
            setattr(task, key, value)
