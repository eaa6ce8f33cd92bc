"""Whether waiting for a result may block here (Celery's names): ``assert_will_not_block``,
``allow_join_result`` and ``denied_join_result``.

``get()``/``join()`` inside a running task raise ``RuntimeError`` (a worker whose
tasks wait for other tasks can deadlock), unless called with
``disable_sync_subtasks=False`` or inside ``with allow_join_result():``;
``with denied_join_result():`` refuses them outside tasks too. Both are context
variables, so they hold for the thread or coroutine that set them.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from ..app import state as _state

E_WOULDBLOCK = (
    "Never call result.get() within a task!\n"
    "See https://docs.celeryq.dev/en/latest/userguide/tasks.html#avoid-launching-synchronous-subtasks"
)

#: True inside allow_join_result, False inside denied_join_result, else None
_join_allowed: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "celeriac_join_allowed", default=None)


def assert_will_not_block() -> None:
    allowed = _join_allowed.get()
    if allowed is False or (allowed is None and _state.get_current_worker_task() is not None):
        raise RuntimeError(E_WOULDBLOCK)


@contextmanager
def allow_join_result() -> Iterator[None]:
    """Let ``get()`` wait inside a task (Celery's escape hatch; mind the deadlock)."""
    token = _join_allowed.set(True)
    try:
        yield
    finally:
        _join_allowed.reset(token)


@contextmanager
def denied_join_result() -> Iterator[None]:
    """Refuse ``get()`` here, inside a task or not."""
    token = _join_allowed.set(False)
    try:
        yield
    finally:
        _join_allowed.reset(token)
