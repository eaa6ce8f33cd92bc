"""Task results: ``AsyncResult`` (read from the result store) and ``EagerResult``.

``get()`` waits through the store's ``wait`` (push-based where the store can: Redis pub/sub,
in-process conditions), re-raises failures as safely rebuilt exceptions (see
:mod:`celeriac.results.meta`) and, like Celery, refuses to block inside a running task
unless ``disable_sync_subtasks=False``. Walking the tree: :mod:`celeriac.results.graph`.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import states
from ..app import state as _state
from ..exceptions import ImproperlyConfigured, RemoteTaskError, TimeoutError
from .blocking import assert_will_not_block
from .downloads import Download, get_download
from .graph import ResultBase
from .meta import exception_from_dict

if TYPE_CHECKING:
    from ..app.base import Celery

class AsyncResult(ResultBase):
    """The pending or finished result of a task, looked up by id."""

    def __init__(self, id: str, backend: Any = None, task_name: str | None = None,
                 app: Celery | None = None, parent: AsyncResult | None = None) -> None:
        if id is None:
            raise ValueError(f"AsyncResult requires valid id, not {type(id)}")
        self.app = app or _state.get_current_app()
        self.id = str(id)
        self._backend = backend
        self.task_name = task_name
        self.parent = parent
        self._cache: dict[str, Any] | None = None
        self._then: list[tuple[Any, Any]] = []

    @property
    def backend(self) -> Any:
        backend = self._backend if self._backend is not None else self.app.backend
        if backend is None:
            raise ImproperlyConfigured(
                "No result backend is configured. Set result_backend (or use the embedded "
                "SQLite default by leaving broker_url unset).")
        return backend

    @property
    def task_id(self) -> str:
        return self.id

    # -- metadata -----------------------------------------------------------------
    def _get_meta(self) -> dict[str, Any]:
        if self._cache is not None:
            return self._cache
        meta = self.backend.get(self.id) or {"status": states.PENDING, "result": None,
                                             "traceback": None, "children": [],
                                             "task_id": self.id}
        self._set_cache(meta)
        return meta

    def _set_cache(self, meta: dict[str, Any] | None) -> None:
        if meta is not None and meta.get("status") in states.READY_STATES:
            self._cache = meta
            self._fire_then()

    def _fire_then(self) -> None:
        pending, self._then = getattr(self, "_then", []), []
        for callback, on_error in pending:
            try:
                callback(self)
            except Exception as exc:
                if on_error is None:
                    raise
                on_error(exc)

    @property
    def state(self) -> str:
        return str(self._get_meta().get("status", states.PENDING))

    status = state

    def _decode(self, meta: dict[str, Any]) -> Any:
        """The stored result; failures stored by Celery's encoding become exceptions.

        A FAILURE whose meta is not an encoded exception (``update_state(state=FAILURE,
        meta={...})`` then ``Ignore``, as CommCare does) reads back as that meta.
        """
        value = meta.get("result")
        if meta.get("status") in states.EXCEPTION_STATES and (
                isinstance(value, dict) and "exc_type" in value):
            return exception_from_dict(value, self.app)
        return value

    @property
    def result(self) -> Any:
        return self._decode(self._get_meta())

    info = result

    @property
    def traceback(self) -> str | None:
        return self._get_meta().get("traceback")

    @property
    def date_done(self) -> datetime | None:
        value = self._get_meta().get("date_done")
        return datetime.fromisoformat(value) if isinstance(value, str) else value

    @property
    def children(self) -> list[Any]:
        """Results of the tasks this one sent while running (Celery's ``trail``)."""
        return [_from_tuple(c, self.app) for c in self._get_meta().get("children") or []]

    def _extended(self, key: str) -> Any:
        return self._get_meta().get(key)

    name = property(lambda self: self._extended("name"))
    args = property(lambda self: self._extended("args"))
    kwargs = property(lambda self: self._extended("kwargs"))
    worker = property(lambda self: self._extended("worker"))
    retries = property(lambda self: self._extended("retries"))
    queue = property(lambda self: self._extended("queue"))

    @property
    def progress(self) -> dict[str, Any] | None:
        """``{"current", "total", "percent"}`` from ``Task.set_progress`` (a ``PROGRESS``
        state with ``current``/``total`` meta); 100% once it succeeded; None otherwise."""
        meta = self._get_meta()
        if meta.get("status") == states.SUCCESS:
            return {"current": 100, "total": 100, "percent": 100.0}
        info = meta.get("result")
        if meta.get("status") != "PROGRESS" or not isinstance(info, dict):
            return None
        current, total = info.get("current"), info.get("total")
        if not isinstance(current, (int, float)) or not isinstance(total, (int, float)):
            return None
        percent = 100.0 if total <= 0 else max(0.0, min(100.0, 100.0 * current / total))
        return {**info, "current": current, "total": total, "percent": percent}

    @property
    def download(self) -> Download | None:
        """The download this task stored with ``Task.save_download`` (None until then)."""
        return get_download(self.backend, self.id)

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    # -- waiting ------------------------------------------------------------------------
    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
            no_ack: bool = True, follow_parents: bool = True, callback: Any = None,
            on_message: Any = None, on_interval: Any = None, disable_sync_subtasks: bool = True,
            EXCEPTION_STATES: frozenset[str] = states.EXCEPTION_STATES,
            PROPAGATE_STATES: frozenset[str] = states.PROPAGATE_STATES) -> Any:
        """Wait for the result (Celery's arguments). ``on_interval()`` is called after
        each ``interval`` of waiting; ``no_ack`` only matters to Celery's ``rpc://``
        backend, whose result messages are consumed (results here are stored)."""
        if disable_sync_subtasks:
            assert_will_not_block()
        watch = follow_parents and propagate and self.parent is not None
        if watch or on_interval is not None:
            meta = self._wait_sliced(timeout, interval, watch, on_interval)
        else:
            meta = self._cache or self.backend.wait(self.id, timeout=timeout, interval=interval)
        return self._outcome(meta, propagate, callback, on_message, PROPAGATE_STATES)

    def _wait_sliced(self, timeout: float | None, interval: float, watch_parents: bool,
                     on_interval: Any) -> dict[str, Any] | None:
        """Wait in ``interval`` slices, calling ``on_interval`` after each and re-raising a
        parent's failure as soon as it shows (a chain whose middle step failed never
        completes its last step)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        first = True
        while True:
            if watch_parents:
                assert self.parent is not None
                self.parent._maybe_reraise_parent_error()
            if on_interval is not None and not first:
                on_interval()
            first = False
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            step = interval if left is None else min(interval, left)
            meta = self._cache or self.backend.wait(self.id, timeout=step, interval=interval)
            if meta is not None and meta.get("status") in states.READY_STATES:
                return meta
            if deadline is not None and time.monotonic() >= deadline:
                return meta

    wait = get

    def _outcome(self, meta: dict[str, Any] | None, propagate: bool, callback: Any = None,
                 on_message: Any = None,
                 propagate_states: frozenset[str] = states.PROPAGATE_STATES) -> Any:
        """What ``get``/``get_async`` return (or raise) for a waited-for meta."""
        if meta is None or meta.get("status") not in states.READY_STATES:
            raise TimeoutError("The operation timed out.")
        self._set_cache(meta)
        if on_message is not None:
            on_message(meta)
        value = self._decode(meta)
        if callback is not None:
            callback(self.id, value)
        if propagate and meta.get("status") in propagate_states:
            raise _as_exception(value)
        return value

    async def get_async(self, timeout: float | None = None, propagate: bool = True,
                        interval: float = 0.5) -> Any:
        """``get`` for asyncio code: polls the store without blocking the event loop
        (each read on a worker thread), backing off up to ``interval``; cancellable."""
        import asyncio

        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        pause = 0.002
        while True:
            meta = self._cache or await asyncio.to_thread(self.backend.get, self.id)
            if meta is not None and meta.get("status") in states.READY_STATES:
                break
            if deadline is not None and loop.time() >= deadline:
                break
            wait = pause if deadline is None else min(pause, deadline - loop.time())
            await asyncio.sleep(max(0.0, wait))
            pause = min(pause * 2, max(interval, 0.002))
        return self._outcome(meta, propagate)

    def _maybe_reraise_parent_error(self) -> None:
        node: AsyncResult | None = self
        chain = []
        while node is not None:
            chain.append(node)
            node = node.parent
        for node in reversed(chain):
            meta = node._get_meta()
            if meta.get("status") in states.PROPAGATE_STATES:
                raise _as_exception(node._decode(meta))

    def forget(self) -> None:
        self._cache = None
        self.backend.delete(self.id)

    def revoke(self, connection: Any = None, terminate: bool = False, signal: Any = None,
               wait: bool = False, timeout: float | None = None) -> None:
        """Revoke: stored as REVOKED so every worker skips it, even after restarts."""
        self.app.control.revoke(self.id, terminate=terminate, signal=signal)

    def as_tuple(self) -> tuple[Any, ...]:
        return ((self.id, self.parent.as_tuple() if self.parent is not None else None), None)

    def then(self, callback: Any, on_error: Any = None, weak: bool = False) -> None:
        """Celery's promise: ``callback(result)`` once this result is seen ready (by
        ``get()``, ``ready()``, ``state``...), at once if it already was; ``on_error(exc)``
        when the callback raises."""
        self._then.append((callback, on_error))
        if self._cache is not None:
            self._fire_then()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id}>"

    def __str__(self) -> str:
        return self.id


def _from_tuple(r: Any, app: Celery) -> Any:
    """An ``as_tuple`` form back as a result (a group's through ``app.GroupResult``)."""
    (task_id, parent), nodes = r
    parent_result = _from_tuple(parent, app) if parent else None
    if isinstance(nodes, (list, tuple)):
        found = app.GroupResult(task_id, [_from_tuple(n, app) for n in nodes])
        found.parent = parent_result
        return found
    return AsyncResult(task_id, app=app, parent=parent_result)


def _as_exception(value: Any) -> BaseException:
    if isinstance(value, BaseException):
        return value
    return RemoteTaskError("Exception", None, value)


class EagerResult(AsyncResult):
    """The result of a task run locally with ``apply()`` or in eager mode."""

    def __init__(self, id: str, ret_value: Any, state: str, traceback: str | None = None,
                 name: str | None = None, app: Celery | None = None) -> None:
        self.id = str(id)
        self._app = app
        self._result = ret_value
        self._state = state
        self._traceback = traceback
        self.task_name = name
        self.parent = None
        self._cache = None
        self._then = []

    @property
    def app(self) -> Celery:
        return self._app or _state.get_current_app()

    @app.setter
    def app(self, value: Celery) -> None:
        self._app = value

    def then(self, callback: Any, on_error: Any = None, weak: bool = False) -> None:
        """An eager result is ready: ``callback(result)`` runs at once."""
        super().then(callback, on_error, weak)
        self._fire_then()

    def _get_meta(self) -> dict[str, Any]:
        return {"status": self._state, "result": self._result, "traceback": self._traceback,
                "task_id": self.id, "children": []}

    @property
    def state(self) -> str:
        return self._state

    status = state

    @property
    def result(self) -> Any:
        return self._result

    info = result

    @property
    def traceback(self) -> str | None:
        return self._traceback

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
            no_ack: bool = True, follow_parents: bool = True, callback: Any = None,
            on_message: Any = None, on_interval: Any = None, disable_sync_subtasks: bool = True,
            EXCEPTION_STATES: frozenset[str] = states.EXCEPTION_STATES,
            PROPAGATE_STATES: frozenset[str] = states.PROPAGATE_STATES) -> Any:
        """The value (or raise the exception) of the local run, as Celery's EagerResult."""
        if disable_sync_subtasks:
            assert_will_not_block()
        if self.successful():
            return self._result
        if self._state in PROPAGATE_STATES:
            if propagate:
                raise self._result if isinstance(self._result, BaseException) else Exception(
                    self._result)
            return self._result
        if self._state in EXCEPTION_STATES:
            return self._result
        return None

    wait = get

    async def get_async(self, timeout: float | None = None, propagate: bool = True,
                        interval: float = 0.5) -> Any:
        return self.get(timeout, propagate, interval, disable_sync_subtasks=False)

    def forget(self) -> None:
        """Eager results are not stored."""

    def revoke(self, *args: Any, **kwargs: Any) -> None:
        self._state = states.REVOKED

    def ready(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<EagerResult: {self.id}>"

