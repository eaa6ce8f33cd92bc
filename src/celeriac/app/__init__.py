"""The application layer: ``Celery`` and everything a producer uses.

:mod:`.base` (``Celery``: configuration, broker and result store, sending),
:mod:`.task` (``Task``), :mod:`.context` (``Task.request``), :mod:`.registry`
(``@app.task``, ``shared_task``), :mod:`.state` (current app and task),
:mod:`.publish` (a call to a message, publishing), :mod:`.routing`,
:mod:`.loaders` (autodiscovery), :mod:`.control` (``app.control``),
:mod:`.builtins` (the ``celery.*`` tasks), :mod:`.trace` (running one task:
the tracer the worker and eager mode share), :mod:`.task_retry` (what
``Task.retry`` re-publishes). Paths mirror Celery's (``celery.app.task.Task``).
"""

from __future__ import annotations

from .base import Celery
from .registry import shared_task
from .state import current_app, current_task

__all__ = ["Celery", "current_app", "current_task", "shared_task"]
