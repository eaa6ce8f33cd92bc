"""What happens after a task ends: link callbacks, the next chain step, error callbacks.

Called by the tracer with the finished task's request. Success callbacks
receive the return value as first argument (unless immutable); the chain
stored in the message (reversed, next step last, as Celery stores it) is
continued with the remaining steps; error callbacks follow Celery's two
styles: ``(request, exc, traceback)`` called in-process when the errback task
takes three or more arguments, else applied with the failed task's id.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

from .canvas import Signature, maybe_signature
from .exceptions import Ignore

if TYPE_CHECKING:
    from .context import Context
    from .task import Task

logger = logging.getLogger("celeriac.workflow")


def _sigs(app: Any, items: Any) -> list[Signature]:
    if not items:
        return []
    if isinstance(items, (dict, Signature)):
        items = [items]
    return [s for s in (maybe_signature(i, app=app, clone=True) for i in items) if s is not None]


def _lineage(ctx: Context) -> dict[str, Any]:
    return {"parent_id": ctx.id, "root_id": ctx.root_id or ctx.id}


def after_success(task: Task, ctx: Context, retval: Any) -> None:
    app = task.app
    for callback in _sigs(app, ctx.callbacks):
        callback.apply_async((retval,), **_lineage(ctx))
    chain = list(ctx.chain or [])
    if chain:
        step = maybe_signature(chain.pop(), app=app, clone=True)
        if step is not None:
            step.apply_async((retval,), chain=chain or None, **_lineage(ctx))
    if ctx.chord:
        from .chords import on_header_done

        on_header_done(task, ctx, retval, failed=False)


def after_failure(task: Task, ctx: Context, exc: BaseException, einfo: Any) -> None:
    call_errbacks(task.app, ctx, exc, einfo)
    if ctx.chord:
        from .chords import on_header_done

        on_header_done(task, ctx, exc, failed=True)


def call_errbacks(app: Any, ctx: Context, exc: BaseException, einfo: Any) -> None:
    """Call every error callback of the failed request ``ctx``."""
    for errback in _sigs(app, ctx.errbacks):
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
    errback.apply_async((ctx.id,), **_lineage(ctx))


def _takes_request(task: Task) -> bool:
    try:
        params = inspect.signature(task.run).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params)


def replace(task: Task, sig: Any) -> None:
    """Replace the running task by ``sig``, which inherits its id, callbacks and chain."""
    ctx = task.request
    app = task.app
    new = maybe_signature(sig, app=app, clone=True)
    if new is None:
        raise TypeError("replace() needs a signature")
    for callback in _sigs(app, ctx.callbacks):
        new.link(callback)
    for errback in _sigs(app, ctx.errbacks):
        new.link_error(errback)
    new.set(task_id=ctx.id, chain=ctx.chain, chord=ctx.chord, group_id=ctx.group,
            group_index=ctx.group_index, replaced_task_nesting=(ctx.replaced_task_nesting or 0)
            + 1, **_lineage(ctx))
    new["options"]["parent_id"] = ctx.parent_id
    if ctx.is_eager:
        raise Ignore(new.apply().get())
    new.apply_async()
    raise Ignore("Replaced by new task")


def fail_outside_tracer(app: Any, message: Any, exc: BaseException) -> None:
    """A task ended without its tracer (worker lost, hard time limit): record FAILURE,
    call its error callbacks and count it in its chord, so workflows still finish."""
    from .backends.meta import store_result
    from .chords import join_member
    from .context import Context
    from .messages import parse_task
    from .states import FAILURE

    task_id = message.task_id
    if not task_id:
        return
    store_result(app, task_id, exc, FAILURE)
    try:
        call = parse_task(message, None)
    except Exception:
        return  # nothing more to follow in a message we cannot decode
    headers = call.headers
    ctx = Context(id=call.id, task=call.name, args=call.args, kwargs=call.kwargs,
                  group=headers.get("group"), group_index=headers.get("group_index"),
                  chord=call.embed.get("chord"), errbacks=call.embed.get("errbacks"),
                  root_id=headers.get("root_id"), parent_id=headers.get("parent_id"),
                  headers=headers, delivery_info={"redelivered": True}, called_directly=False)
    call_errbacks(app, ctx, exc, None)
    if ctx.chord:
        join_member(app, ctx, exc, failed=True)
