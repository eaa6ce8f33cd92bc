"""Celery's ``celery.contrib.abortable``: long tasks that stop when a producer asks.

The producer calls ``abort()`` on the task's :class:`AbortableAsyncResult` (what
``delay()``/``apply_async()`` of an :class:`AbortableTask` return); that stores the
state ``ABORTED`` in the result store (never over a success or a revocation). The task
checks ``self.is_aborted()`` at points of its choosing and returns early; nothing
stops it otherwise (use ``revoke(terminate=True)`` for that). As in Celery,
``ABORTED`` is not a ready state, and the task's own end (its return value or
failure) is stored over it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..app.task import Task
from ..results.async_result import AsyncResult, EagerResult
from ..results.meta import store_result

ABORTED = "ABORTED"

__all__ = ["ABORTED", "AbortableAsyncResult", "AbortableTask"]


class AbortableAsyncResult(AsyncResult):
    """A result whose task can be asked to stop."""

    def is_aborted(self) -> bool:
        return self.state == ABORTED

    def abort(self) -> None:
        """Ask the task to stop: store ``ABORTED`` (not over a success or a revocation)."""
        store_result(self.app, self.id, None, ABORTED)
        self._set_cache(None)


class AbortableTask(Task):
    """Base class of tasks that check :meth:`is_aborted` while they run
    (``@app.task(bind=True, base=AbortableTask)``)."""

    abstract = True

    def AsyncResult(self, task_id: str, **kwargs: Any) -> AbortableAsyncResult:
        return AbortableAsyncResult(task_id, app=self.app, task_name=self.name, **kwargs)

    def apply_async(self, args: Iterable[Any] | None = None,
                    kwargs: Mapping[str, Any] | None = None, *rest: Any,
                    **options: Any) -> Any:
        result = super().apply_async(args, kwargs, *rest, **options)
        if isinstance(result, EagerResult) or not isinstance(result, AsyncResult):
            return result
        return self.AsyncResult(result.id)

    def is_aborted(self, **kwargs: Any) -> bool:
        """True once a producer called ``abort()`` on this run's result."""
        task_id = kwargs.get("task_id") or self.request.id
        return bool(task_id) and self.AsyncResult(task_id).is_aborted()
