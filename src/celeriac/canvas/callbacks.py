"""What happens after a task ends: link callbacks, the next chain step, error callbacks.

Called by the tracer with the finished task's request. Success callbacks
receive the return value as first argument (unless immutable); the chain
stored in the message (reversed, next step last, as Celery stores it) is
continued with the remaining steps; error callbacks are called as
:mod:`celeriac.canvas.errbacks` says; a chord header member is counted in its
chord's join (:mod:`celeriac.canvas.join`). ``Task.replace`` lives here too.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from ..app.context import Context
from ..app.request import parse_request
from ..exceptions import Ignore
from ..results.meta import store_result
from ..security.setup import readable
from ..states import FAILURE
from .errbacks import call_errbacks, lineage, signatures
from .join import join_member, on_header_done
from .signature import maybe_signature

if TYPE_CHECKING:
    from ..app.task import Task


#: ``handler(what, step, error, args, options)``: a follow-up step (``what`` = "link",
#: "chain", "chord", "errback"; ``step`` its signature as stored) could not be sent after
#: the body ran; ``args``/``options`` are what it was being sent with
FollowupHandler = Callable[..., None]


def _guarded(failed: FollowupHandler | None, what: str, step: Any, call: Callable[[], Any],
             args: tuple[Any, ...] = (), options: dict[str, Any] | None = None) -> None:
    """Run one follow-up; its error goes to ``failed`` (the worker) or propagates (eager)."""
    if failed is None:
        call()
        return
    try:
        call()
    except Exception as exc:
        failed(what, step, exc, args, options or {})


def after_success(task: Task, ctx: Context, retval: Any,
                  failed: FollowupHandler | None = None) -> None:
    """Apply the links, the next chain step and count a chord member; each one on its own,
    so one that cannot be sent does not stop the others."""
    app = task.app
    for callback in signatures(app, ctx.callbacks):
        _guarded(failed, "link", callback, partial(callback.apply_async, (retval,),
                                                   **lineage(ctx)), (retval,), lineage(ctx))
    chain = list(ctx.chain or [])
    if chain:
        raw = chain.pop()
        options = {"chain": chain or None, **lineage(ctx)}

        def next_step() -> None:
            step = maybe_signature(raw, app=app, clone=True)
            if step is not None:
                step.apply_async((retval,), **options)

        _guarded(failed, "chain", raw, next_step, (retval,), options)
    if ctx.chord:
        _guarded(failed, "chord", ctx.chord,
                 lambda: on_header_done(task, ctx, retval, failed=False))


def after_failure(task: Task, ctx: Context, exc: BaseException, einfo: Any,
                  failed: FollowupHandler | None = None) -> None:
    _guarded(failed, "errback", ctx.errbacks, lambda: call_errbacks(task.app, ctx, exc, einfo))
    if ctx.chord:
        _guarded(failed, "chord", ctx.chord,
                 lambda: on_header_done(task, ctx, exc, failed=True))


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
        ctx = parse_request(readable(app, message))
    except Exception:
        return  # nothing more to follow in a message we cannot decode
    ctx.update(delivery_info={**ctx.delivery_info, "redelivered": True})
    call_errbacks(app, ctx, exc, None)
    if ctx.chord:
        join_member(app, ctx, exc, failed=True)
