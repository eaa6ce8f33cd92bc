"""What happens after a task ends: link callbacks, the next chain step, error callbacks.

Called by the tracer with the finished task's request. Success callbacks
receive the return value as first argument (unless immutable); the chain
stored in the message (reversed, next step last, as Celery stores it) is
continued with the remaining steps; error callbacks are called as
:mod:`celeriac.canvas.errbacks` says; a chord header member is counted in its
chord's join (:mod:`celeriac.canvas.join`). ``Task.replace`` lives here too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..app.context import Context
from ..exceptions import Ignore
from ..messages import parse_task
from ..results.meta import store_result
from ..states import FAILURE
from .errbacks import call_errbacks, lineage, signatures
from .join import join_member, on_header_done
from .signature import maybe_signature

if TYPE_CHECKING:
    from ..app.task import Task


def after_success(task: Task, ctx: Context, retval: Any) -> None:
    app = task.app
    for callback in signatures(app, ctx.callbacks):
        callback.apply_async((retval,), **lineage(ctx))
    chain = list(ctx.chain or [])
    if chain:
        step = maybe_signature(chain.pop(), app=app, clone=True)
        if step is not None:
            step.apply_async((retval,), chain=chain or None, **lineage(ctx))
    if ctx.chord:
        on_header_done(task, ctx, retval, failed=False)


def after_failure(task: Task, ctx: Context, exc: BaseException, einfo: Any) -> None:
    call_errbacks(task.app, ctx, exc, einfo)
    if ctx.chord:
        on_header_done(task, ctx, exc, failed=True)


def replace(task: Task, sig: Any) -> None:
    """Replace the running task by ``sig``, which inherits its id, callbacks and chain."""
    ctx = task.request
    app = task.app
    new = maybe_signature(sig, app=app, clone=True)
    if new is None:
        raise TypeError("replace() needs a signature")
    for callback in signatures(app, ctx.callbacks):
        new.link(callback)
    for errback in signatures(app, ctx.errbacks):
        new.link_error(errback)
    new.set(task_id=ctx.id, chain=ctx.chain, chord=ctx.chord, group_id=ctx.group,
            group_index=ctx.group_index, replaced_task_nesting=(ctx.replaced_task_nesting or 0)
            + 1, **lineage(ctx))
    new["options"]["parent_id"] = ctx.parent_id
    if ctx.is_eager:
        raise Ignore(new.apply().get())
    new.apply_async()
    raise Ignore("Replaced by new task")


def fail_outside_tracer(app: Any, message: Any, exc: BaseException) -> None:
    """A task ended without its tracer (worker lost, hard time limit): record FAILURE,
    call its error callbacks and count it in its chord, so workflows still finish."""
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
