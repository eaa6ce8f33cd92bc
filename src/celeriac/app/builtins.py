"""The builtin tasks every app has: ``celery.map``, ``celery.starmap``, ``celery.chunks``
and ``celery.accumulate`` (Celery's names, so messages from Celery run here too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..canvas.maps import chunks
from ..canvas.signature import maybe_signature

if TYPE_CHECKING:
    from .base import Celery


def register_builtins(app: Celery) -> None:
    if "celery.map" in app._tasks:
        return

    @app.task(name="celery.map", shared=False, lazy=False)
    def xmap_task(task: Any, it: list[Any]) -> list[Any]:
        fun = maybe_signature(task, app=app).type  # type: ignore[union-attr]
        return [fun(item) for item in it]

    @app.task(name="celery.starmap", shared=False, lazy=False)
    def xstarmap_task(task: Any, it: list[Any]) -> list[Any]:
        fun = maybe_signature(task, app=app).type  # type: ignore[union-attr]
        return [fun(*item) for item in it]

    @app.task(name="celery.chunks", shared=False, lazy=False)
    def chunks_task(task: Any, it: list[Any], n: int) -> list[str]:
        result = chunks(task, it, n, app=app).apply_async()
        return [r.id for r in result.results]

    @app.task(name="celery.accumulate", shared=False, lazy=False)
    def accumulate(*args: Any, **kwargs: Any) -> Any:
        index = kwargs.get("index")
        return args[index] if index is not None else args

    del xmap_task, xstarmap_task, chunks_task, accumulate

