"""celeriac: a Celery-compatible distributed task queue.

``from celeriac import Celery, shared_task`` is all a Celery project changes.
"""

from __future__ import annotations

from . import states
from ._state import current_app, current_task
from .app import Celery
from .canvas import Signature, maybe_signature, signature, subtask
from .registry import shared_task
from .result import AsyncResult
from .task import Task

__version__ = "0.1.0"
VERSION = __version__
version_info = tuple(int(part) for part in __version__.split("."))


def uuid() -> str:
    """A new task id (``celery.uuid``)."""
    import uuid as _uuid

    return str(_uuid.uuid4())


def __getattr__(name: str) -> object:
    # canvas primitives live in celeriac.canvas; imported lazily so a partial
    # checkout of the canvas module does not break ``import celeriac``
    if name in {"chain", "group", "chord", "chunks", "xmap", "xstarmap"}:
        from . import canvas

        return getattr(canvas, name)
    if name == "GroupResult":
        from . import result

        return getattr(result, name)
    if name == "periodic_task":
        from .registry import periodic_task

        return periodic_task
    raise AttributeError(f"module 'celeriac' has no attribute {name!r}")


__all__ = [
    "AsyncResult", "Celery", "Signature", "Task", "current_app", "current_task",
    "maybe_signature", "shared_task", "signature", "states", "subtask", "uuid",
]
