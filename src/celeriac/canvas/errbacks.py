"""Error callbacks (``link_error``) of a failed task, in Celery's two styles.

``(request, exc, traceback)`` is called in-process when the errback task
takes three or more arguments; otherwise the errback is applied with the
failed task's id. Shared by the tracer's callbacks and the chord join.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

from .signature import Signature, maybe_signature

if TYPE_CHECKING:
    from ..app.context import Context
    from ..app.task import Task

logger = logging.getLogger("celeriac.workflow")


def signatures(app: Any, items: Any) -> list[Signature]:
    """``callbacks``/``errbacks`` of a request as fresh signatures."""
    if not items:
        return []
    if isinstance(items, (dict, Signature)):
        items = [items]
    return [s for s in (maybe_signature(i, app=app, clone=True) for i in items) if s is not None]


def lineage(ctx: Context) -> dict[str, Any]:
    """The parent/root ids a task started by ``ctx``'s task carries."""
    return {"parent_id": ctx.id, "root_id": ctx.root_id or ctx.id}


def call_errbacks(app: Any, ctx: Context, exc: BaseException, einfo: Any) -> None:
    """Call every error callback of the failed request ``ctx``."""
    for errback in signatures(app, ctx.errbacks):
        _call_errback(app, errback, ctx, exc, einfo)


def _call_errback(app: Any, errback: Signature, ctx: Context, exc: BaseException,
                  einfo: Any) -> None:
    target = app.tasks.get(errback.task)
    if target is not None and _takes_request(target):
        try:
            errback.type(ctx, exc, getattr(einfo, "traceback", None))
        except Exception:
            logger.exception("Error callback %r raised", errback)
        return
    errback.apply_async((ctx.id,), **lineage(ctx))


def _takes_request(task: Task) -> bool:
    try:
        params = inspect.signature(task.run).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params)
