"""The worker side of a chord: join each header result, fire the body once.

After each header task ends (success or final failure) the tracer calls
:func:`on_header_done`. It records the task's result meta with the result
store's atomic ``chord_add(group_id, group_index, meta, size)`` (Redis Lua,
one SQLite transaction, an in-process lock: no polling task). The one call
that completes the set receives every meta in header order and:

* publishes the body with the ordered results as first argument (unless the
  body is immutable) under the body's pre-assigned ``task_id``; or
* if any header task failed, stores the body's result as FAILURE with
  ``ChordError("Dependency <id> raised <exc>")`` and calls the body's error
  callbacks, as Celery does;

then clears the join state. The chord size travels in the body signature
(``options.chord_size``); a chord sent by a real Celery client has it in
Celery's ``celery-taskset-meta-<gid>.s`` key (Redis results), which is read
instead. Celery writes that key just before it publishes the last header
task, so a member that ends earlier may not see it: stores that can
(``ResultStore.reads_celery_chord_size``: Redis) record the member and read
the key in one atomic step (``chord_add_celery_sized``); the member completing
the set fires the body.
Crash safety is discussed in docs/canvas.md ("Exactly once").
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .. import states
from ..app.context import Context
from ..exceptions import ChordError
from ..results.meta import encode_result, exception_from_dict, store_result
from .errbacks import call_errbacks
from .signature import Signature, maybe_signature

if TYPE_CHECKING:
    from ..app.base import Celery
    from ..app.task import Task

logger = logging.getLogger("celeriac.chords")


def chord_error(task_id: str, exc: Any) -> ChordError:
    """Celery's error for a failed header member."""
    return ChordError(f"Dependency {task_id} raised {exc!r}")


def on_header_done(task: Task, ctx: Context, retval: Any, failed: bool) -> None:
    """Record a finished header task; the call completing the set fires the body."""
    join_member(task.app, ctx, retval, failed)


def join_member(app: Celery, ctx: Context, value: Any, failed: bool) -> None:
    """Record member ``ctx.group_index`` of chord ``ctx.group`` (also for lost members)."""
    backend = app.backend
    body = maybe_signature(ctx.chord, app=app, clone=True)
    if body is None or ctx.group is None or ctx.group_index is None:
        return
    if backend is None:
        logger.error("Chord %s needs a result backend; body %r not applied", ctx.group, body)
        return
    size = chord_size(app, body, ctx.group)
    if size is None and not backend.reads_celery_chord_size:
        logger.error("Chord %s: size unknown (no chord_size); body %r not applied",
                     ctx.group, body)
        return
    state = states.FAILURE if failed else states.SUCCESS
    meta = {"task_id": ctx.id, "status": state, "result": encode_result(value, state)}
    redelivered = _redelivered(ctx)
    if redelivered and _already_fired(backend, body, str(ctx.group)):
        return  # a late copy: do not start a new join state after chord_clear
    if size is None:  # a Celery client's chord whose size key is not written yet
        parts = backend.chord_add_celery_sized(str(ctx.group), int(ctx.group_index), meta)
    else:
        parts = backend.chord_add(str(ctx.group), int(ctx.group_index), meta, size)
    if parts is None and redelivered and size is not None:
        parts = recover(app, body, str(ctx.group), size)
    if parts is None:
        return
    fire(app, body, str(ctx.group), parts, ctx)


def _redelivered(ctx: Context) -> bool:
    return bool((ctx.delivery_info or {}).get("redelivered"))


def recover(app: Celery, body: Signature, group_id: str,
            size: int) -> list[dict[str, Any]] | None:
    """For a redelivered header task: the complete set of results if the body was never
    applied (its completer died after the join, before applying it), else None.

    Reads the header's saved GroupResult and the members' stored results; members
    that ignore their results cannot be recovered this way.
    """
    backend = app.backend
    assert backend is not None
    if _already_fired(backend, body, group_id):
        return None
    saved = backend.get_group(group_id)
    if not saved:
        return None
    ids = [str(node[0][0]) for node in saved["result"][1]]
    metas = backend.get_many(ids)
    if len(ids) != size or any(metas.get(i, {}).get("status") not in states.READY_STATES
                               for i in ids):
        return None
    logger.warning("Chord %s: completing the join again for a redelivered header task",
                   group_id)
    return [{"task_id": i, "status": metas[i]["status"], "result": metas[i].get("result")}
            for i in ids]


def chord_size(app: Celery, body: Signature, group_id: str) -> int | None:
    size = body["options"].get("chord_size") or body.get("chord_size")
    if size is None:
        backend = app.backend
        raw = backend._get_raw(f"{backend.group_key(group_id)}.s") if backend else None
        size = raw.decode() if isinstance(raw, bytes) else raw
    return int(size) if size is not None else None


def fire(app: Celery, body: Signature, group_id: str, parts: list[dict[str, Any]],
         ctx: Context) -> None:
    """Apply the body (or fail it) for a complete set of header metas, then clear."""
    backend = app.backend
    assert backend is not None
    if not _already_fired(backend, body, group_id):
        culprit = next((p for p in parts if p.get("status") in states.PROPAGATE_STATES), None)
        if culprit is not None:
            reason = exception_from_dict(culprit.get("result"), app)
            fail_body(app, body, chord_error(str(culprit.get("task_id")), reason), ctx)
        else:
            values = [p.get("result") for p in parts]
            body.apply_async((values,), parent_id=ctx.id, root_id=ctx.root_id or ctx.id)
        backend._set_raw(_fired_key(backend, group_id), "1", backend.expires)
    backend.chord_clear(group_id)


def _fired_key(backend: Any, group_id: str) -> str:
    return f"{backend.group_key(group_id)}.fired"


def _already_fired(backend: Any, body: Signature, group_id: str) -> bool:
    """True when the body was applied already, or started or finished."""
    if backend._get_raw(_fired_key(backend, group_id)) is not None:
        return True
    body_id = _body_id(body)
    if body_id is None:
        return False
    meta = backend.get(body_id)
    return meta is not None and meta.get("status") in states.READY_STATES | {states.STARTED}


def _chain_steps(sig: Signature) -> list[Signature]:
    """The steps of a chain body (empty for any other signature)."""
    if sig.subtask_type != "chain":
        return []
    steps = (maybe_signature(t) for t in sig["kwargs"].get("tasks") or ())
    return [step for step in steps if step is not None]


def _body_id(body: Signature) -> str | None:
    steps = _chain_steps(body)
    if steps:
        return steps[0].id
    return body.id


def fail_body(app: Celery, body: Signature, exc: ChordError, ctx: Context) -> None:
    """Store the body as failed with ``exc`` and call its error callbacks."""
    last = (_chain_steps(body) or [body])[-1]
    opts = last["options"]
    body_ctx = Context(id=last.id, task=last.task, args=last.args, kwargs=last.kwargs,
                       group=opts.get("group_id"), group_index=opts.get("group_index"),
                       chord=opts.get("chord"), parent_id=ctx.id,
                       root_id=ctx.root_id or ctx.id,
                       errbacks=opts.get("link_error") or body["options"].get("link_error"))
    logger.error("Chord %s failed: %s", ctx.group, exc)
    if last.id is not None:
        store_result(app, last.id, exc, states.FAILURE, request=body_ctx)
    call_errbacks(app, body_ctx, exc, None)
    if body_ctx.chord is not None:
        join_member(app, body_ctx, exc, failed=True)
