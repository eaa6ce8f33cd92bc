"""celeriac: a Celery-compatible distributed task queue.

``from celeriac import Celery, shared_task`` is all a Celery project changes.
"""

from __future__ import annotations

import uuid as _uuid

from . import states
from .app.base import Celery
from .app.registry import periodic_task, shared_task
from .app.state import current_app, current_task
from .app.task import Task
from .canvas import (
    Signature,
    chain,
    chord,
    chunks,
    group,
    maybe_signature,
    signature,
    subtask,
    xmap,
    xstarmap,
)
from .results.async_result import AsyncResult
from .results.group import GroupResult
from .version import __version__

VERSION = __version__
version_info = tuple(int(part) for part in __version__.split("."))


def uuid() -> str:
    """A new task id (``celery.uuid``)."""
    return str(_uuid.uuid4())


__all__ = [
    "AsyncResult", "Celery", "GroupResult", "Signature", "Task", "chain", "chord", "chunks",
    "current_app", "current_task", "group", "maybe_signature", "periodic_task", "shared_task",
    "signature", "states", "subtask", "uuid", "xmap", "xstarmap",
]
