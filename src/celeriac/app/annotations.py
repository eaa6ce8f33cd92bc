"""``task_annotations`` (Celery's): task attributes set from the configuration.

The setting is one source or a list of them; a source is a mapping from a task name
(or ``"*"``, every task) to attributes, an object with ``annotate(task)`` (and/or
``annotate_any()``) returning such a mapping or ``None``, or a dotted path naming a
class (or factory) of such objects, called once with no arguments as Celery's
``instantiate`` does (a path naming a mapping or annotating object is used as it is):
``{"tasks.add": {"rate_limit": "10/m"}}``. As in Celery, the first source whose answer
for a task's name is not ``None`` applies (an empty ``{}`` too: it shadows the sources
after it), then the first whose ``"*"`` answer is not ``None``, so ``"*"`` wins where
both set an attribute. Applied to every registered task when the app is finalized
(before a worker starts its pool), and to a task registered later when it is
registered (Celery annotates each task as it binds it). Method annotations (keys
starting with ``@``, Celery's ``add_around``) are refused with an error naming them;
so are a source that cannot annotate and an answer that is not a mapping.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..exceptions import ImproperlyConfigured
from .loaders import import_object

if TYPE_CHECKING:
    from .base import Celery
    from .task import Task

#: Each app's sources, built once per value of the setting (Celery's cached
#: ``app.annotations``): a class named by path is instantiated once, not per task.
_prepared: weakref.WeakKeyDictionary[Any, tuple[Any, list[Any]]] = weakref.WeakKeyDictionary()


def _annotates(source: Any) -> bool:
    return isinstance(source, Mapping) or any(
        hasattr(source, method) for method in ("annotate", "annotate_any"))


def _named(path: str) -> Any:
    """The source a dotted path names: Celery calls it (``instantiate(path)``); celeriac
    also takes a path to a mapping or an annotating object as it is."""
    found = import_object(path)
    if isinstance(found, type) or (callable(found) and not _annotates(found)):
        return found()
    return found


def _source(item: Any) -> Any:
    source = _named(item) if isinstance(item, str) else item
    if not _annotates(source):
        hint = " (Celery skips a function here: it calls annotate(task))" if callable(
            source) else ""
        raise ImproperlyConfigured(f"task_annotations: {item!r} is neither a mapping of task "
                                   f"names to attributes nor an object with annotate(task)"
                                   f"{hint}")
    return source


def _sources(app: Celery) -> list[Any]:
    configured = app.conf.get("task_annotations")
    if configured is None:
        return []
    cached = _prepared.get(app)
    if cached is not None and cached[0] is configured:
        return cached[1]
    items = configured if isinstance(configured, (list, tuple)) else [configured]
    sources = [_source(item) for item in items]
    _prepared[app] = (configured, sources)
    return sources


def _not_attributes(answer: Any, source: Any, task: Task) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"task_annotations for {task.name}: {source!r} gave "
                                f"{answer!r}, not a mapping of attributes")


def _attributes(answer: Any, source: Any, task: Task) -> dict[str, Any]:
    """A mapping's value as Celery's MapAnnotation reads it: ``dict(value)``."""
    try:
        return dict(answer)
    except (TypeError, ValueError):
        raise _not_attributes(answer, source, task) from None


def _answer(source: Any, task: Task, key: str | None, method: str) -> dict[str, Any] | None:
    """The source's attributes for ``key`` (a task name, or ``"*"``), or None: a mapping
    answers by key (Celery's MapAnnotation), an object by ``method`` (when it has it)."""
    if isinstance(source, Mapping):
        return _attributes(source[key], source, task) if key in source else None
    annotate = getattr(source, method, None)
    if annotate is None:
        return None
    answer = annotate(task) if method == "annotate" else annotate()
    if answer is None:
        return None
    if not isinstance(answer, Mapping):  # Celery calls its items(): pairs are refused
        raise _not_attributes(answer, source, task)
    return dict(answer)


def _by_name(source: Any, task: Task) -> dict[str, Any] | None:
    return _answer(source, task, task.name, "annotate")


def _for_any(source: Any, task: Task) -> dict[str, Any] | None:
    return _answer(source, task, "*", "annotate_any")


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


def _first(answers: Any) -> dict[str, Any] | None:
    return next((answer for answer in answers if answer is not None), None)


def _annotate(sources: list[Any], task: Task) -> None:
    named = _first(_by_name(source, task) for source in sources)
    anyone = _first(_for_any(source, task) for source in sources)
    for attrs in (named, anyone):
        for key, value in (attrs or {}).items():
            if key.startswith("@"):
                raise ImproperlyConfigured(
                    f"task_annotations for {task.name}: {key!r}: method annotations "
                    "are not supported; set attributes (rate_limit, time_limit...)")
            setattr(task, key, value)
