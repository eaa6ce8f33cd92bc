"""soil's ``progress`` module: storing a task's state and reading its progress.

``update_task_state(task, state, meta)`` and ``set_task_progress(task, current,
total)`` store the *running* request's state through ``task.update_state``; called
outside a task run (no request id) they do nothing, as soil's do.
``get_task_progress(result)`` reads soil's progress dict back.
"""

from __future__ import annotations

from typing import Any

from ... import states


def update_task_state(task: Any, state: str, meta: Any) -> None:
    """Store ``state`` with ``meta`` for the task's running request (seed 000, Option 1:
    ``update_task_state(task, states.FAILURE, {'errors': errors})`` then ``Ignore``)."""
    if not task:
        return
    try:
        task.update_state(state=state, meta=_storable(meta))
    except (TypeError, NotImplementedError, ValueError):
        pass  # not in a task run: nothing to record (soil swallows this too)


def set_task_progress(task: Any, current: float, total: float) -> None:
    update_task_state(task, "PROGRESS", {"current": current, "total": total})


def _storable(meta: Any) -> Any:
    """``meta`` with exceptions in an ``errors`` list stored as their messages (the seed
    passes ``errors = [err]``), so any result store can keep it."""
    if isinstance(meta, dict) and isinstance(meta.get("errors"), (list, tuple)):
        return {**meta, "errors": [str(e) if isinstance(e, BaseException) else e
                                   for e in meta["errors"]]}
    return meta


def get_task_progress(result: Any) -> dict[str, Any]:
    """``{"current", "total", "percent", "error", "error_message"}`` of a task's result
    (all None/False for an unknown task)."""
    out: dict[str, Any] = {"current": None, "total": None, "percent": None,
                           "error": False, "error_message": None}
    if result is None:
        return out
    progress = result.progress
    if progress is not None:
        out.update(current=progress["current"], total=progress["total"],
                   percent=progress["percent"])
    if result.state == states.FAILURE:
        out["error"] = True
        out["error_message"] = "; ".join(error_messages(result))
    return out


def error_messages(result: Any) -> list[str]:
    """The errors of a failed task: Option 1's ``{'errors': [...]}`` meta, or Option 2's
    exception message."""
    info = result.info
    if isinstance(info, dict) and isinstance(info.get("errors"), list):
        return [str(e) for e in info["errors"]]
    if isinstance(info, BaseException):
        return [str(info) or type(info).__name__]
    return [] if info is None else [str(info)]
