"""Results of several tasks: ``ResultSet`` and ``GroupResult``.

``get()``/``join()`` return values in call order. Waiting is efficient: one
batched ``get_many`` read finds every finished member, then the store's
blocking ``wait`` (pub/sub, condition or data_version) sleeps on the last
unfinished one, and the cycle repeats re-reading only unfinished members
(finished ones are cached), so N members cost about O(N) reads, not N polls
per interval. ``GroupResult.save`` stores Celery's format under
``celery-taskset-meta-<id>``: ``{"result": [[gid, null], [[[tid, null], null], ...]]}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .. import states
from ..app import state as _state
from ..exceptions import TimeoutError
from .async_result import AsyncResult, EagerResult, ResultBase, assert_will_not_block
from .meta import exception_from_dict

if TYPE_CHECKING:
    from ..app.base import Celery


class ResultSet(ResultBase):
    """A list of results handled together (a ``ResultBase``, as in Celery)."""

    #: set on the per-app subclass ``app.GroupResult`` (Celery binds it to the app)
    _default_app: Celery | None = None

    def __init__(self, results: list[Any], app: Celery | None = None, **kwargs: Any) -> None:
        self.results = list(results)
        self._app = app or self._default_app

    @property
    def app(self) -> Celery:
        return self._app or _state.get_current_app()

    @app.setter
    def app(self, value: Celery) -> None:
        self._app = value

    @property
    def backend(self) -> Any:
        return self.app.backend

    # -- membership -----------------------------------------------------------------
    def add(self, result: Any) -> None:
        if result not in self.results:
            self.results.append(result)

    def remove(self, result: Any) -> None:
        if isinstance(result, str):
            result = self.app.AsyncResult(result)
        self.results.remove(result)

    def discard(self, result: Any) -> None:
        try:
            self.remove(result)
        except ValueError:
            pass

    def update(self, results: list[Any]) -> None:
        self.results.extend(r for r in results if r not in self.results)

    def clear(self) -> None:
        self.results[:] = []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.results)

    def __getitem__(self, index: int) -> Any:
        return self.results[index]

    def __len__(self) -> int:
        return len(self.results)

    # -- state -------------------------------------------------------------------------
    def _metas(self) -> list[dict[str, Any]]:
        """Current meta of every member, read in one batch for stored results."""
        stored = [r for r in self.results if _is_stored(r) and r._cache is None]
        found = self.backend.get_many([r.id for r in stored]) if stored else {}
        out = []
        for r in self.results:
            if _is_stored(r):
                meta = r._cache or found.get(r.id)
                if meta is not None:
                    r._set_cache(meta)
                out.append(meta or {"status": states.PENDING, "task_id": r.id})
            else:
                out.append(r._get_meta())
        return out

    def successful(self) -> bool:
        return all(m.get("status") == states.SUCCESS for m in self._metas())

    def failed(self) -> bool:
        return any(m.get("status") == states.FAILURE for m in self._metas())

    def maybe_reraise(self, callback: Any = None, propagate: bool = True) -> None:
        for r, meta in zip(self.results, self._metas(), strict=True):
            if meta.get("status") in states.PROPAGATE_STATES:
                raise r._decode(meta)

    maybe_throw = maybe_reraise

    def _maybe_reraise_parent_error(self) -> None:
        """``AsyncResult.get(follow_parents=True)`` through a group: raise a failed member."""
        parent = getattr(self, "parent", None)
        if parent is not None:
            parent._maybe_reraise_parent_error()
        self.maybe_reraise()

    def waiting(self) -> bool:
        return any(m.get("status") not in states.READY_STATES for m in self._metas())

    def ready(self) -> bool:
        return not self.waiting()

    def completed_count(self) -> int:
        return sum(1 for m in self._metas() if m.get("status") == states.SUCCESS)

    def forget(self) -> None:
        for r in self.results:
            r.forget()

    def revoke(self, connection: Any = None, terminate: bool = False, signal: Any = None,
               wait: bool = False, timeout: float | None = None) -> None:
        """Revoke every member (one call, so the store records them together)."""
        self.app.control.revoke(self._leaf_ids(), terminate=terminate, signal=signal)

    def _leaf_ids(self) -> list[str]:
        ids: list[str] = []
        for r in self.results:
            ids.extend(r._leaf_ids() if isinstance(r, ResultSet) else [r.id])
        return ids

    # -- waiting ---------------------------------------------------------------------------
    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
            callback: Callable[[str, Any], Any] | None = None, no_ack: bool = True,
            on_message: Any = None, disable_sync_subtasks: bool = True,
            on_interval: Any = None) -> list[Any]:
        return self.join(timeout=timeout, propagate=propagate, interval=interval,
                         callback=callback, disable_sync_subtasks=disable_sync_subtasks,
                         on_interval=on_interval)

    def join(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
             callback: Callable[[str, Any], Any] | None = None, no_ack: bool = True,
             on_message: Any = None, disable_sync_subtasks: bool = True,
             on_interval: Any = None) -> list[Any]:
        """Wait for every member; return their values in call order."""
        if disable_sync_subtasks:
            assert_will_not_block()
        deadline = None if timeout is None else time.monotonic() + timeout
        metas = self._wait_all(deadline, interval, propagate, on_interval)
        values = []
        for r, meta in zip(self.results, metas, strict=True):
            value = r._decode(meta)
            if propagate and meta.get("status") in states.PROPAGATE_STATES:
                raise value
            if callback is not None:
                callback(r.id, value)
            values.append(value)
        return values

    join_native = join

    def _wait_all(self, deadline: float | None, interval: float, propagate: bool = False,
                  on_interval: Any = None) -> list[dict[str, Any]]:
        """Metas of all members once ready; or as soon as a failure would be raised,
        like Celery's join: a failed member whose predecessors are all ready."""
        while True:
            metas = self._metas()
            pending = [r for r, m in zip(self.results, metas, strict=True)
                       if m.get("status") not in states.READY_STATES]
            if not pending or (propagate and _failure_reached(metas)):
                return metas
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError("The operation timed out.")
            # members finish roughly in publish order: waiting for the last unfinished
            # one lets the next batched read find (nearly) all of them done; the wait is
            # capped at ``interval`` so a failure among earlier members is seen promptly
            last = pending[-1]
            step = interval if remaining is None else min(interval, remaining)
            if isinstance(last, ResultSet):
                try:
                    last.join(timeout=step, propagate=False, interval=interval,
                              disable_sync_subtasks=False)
                except TimeoutError:
                    pass
            else:
                self.backend.wait(last.id, timeout=step, interval=interval)
            if on_interval is not None:  # Celery calls it once per polling interval
                on_interval()

    def iterate(self, timeout: float | None = None, propagate: bool = True,
                interval: float = 0.5) -> Iterator[Any]:
        yield from self.join(timeout=timeout, propagate=propagate, interval=interval)

    def then(self, callback: Any, on_error: Any = None, weak: bool = False) -> None:
        for r in self.results:
            r.then(callback, on_error)

    @property
    def supports_native_join(self) -> bool:
        return True

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultSet):
            return other.results == self.results
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self.results))

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(r.id for r in self.results)}]>"


def _failure_reached(metas: list[dict[str, Any]]) -> bool:
    for meta in metas:
        status = meta.get("status")
        if status in states.PROPAGATE_STATES:
            return True
        if status not in states.READY_STATES:
            return False
    return False


def _is_stored(result: Any) -> bool:
    return isinstance(result, AsyncResult) and not isinstance(result, EagerResult)


class GroupResult(ResultSet):
    """The results of a group, with the group's id; can be saved and restored."""

    def __init__(self, id: str | None = None, results: list[Any] | None = None,
                 parent: Any = None, app: Celery | None = None, **kwargs: Any) -> None:
        super().__init__(results or [], app=app)
        self.id = id
        self.parent = parent

    # ``_metas`` needs member metas; a nested GroupResult reports a summary meta
    def _get_meta(self) -> dict[str, Any]:
        metas = self._metas()
        if any(m.get("status") not in states.READY_STATES for m in metas):
            return {"status": states.PENDING, "task_id": self.id}
        failed = [m for m in metas if m.get("status") in states.PROPAGATE_STATES]
        return failed[0] if failed else {"status": states.SUCCESS,
                                         "result": self.join(propagate=False,
                                                             disable_sync_subtasks=False),
                                         "task_id": self.id}

    def _set_cache(self, meta: dict[str, Any] | None) -> None:
        """Members keep their own caches."""

    def _decode(self, meta: dict[str, Any]) -> Any:
        if meta.get("status") in states.EXCEPTION_STATES:
            return exception_from_dict(meta.get("result"), self.app)
        return meta.get("result")

    def save(self, backend: Any = None) -> GroupResult:
        (backend or self.backend).save_group(self.id, {"result": self.as_tuple()})
        return self

    def delete(self, backend: Any = None) -> None:
        (backend or self.backend).delete_group(self.id)

    @classmethod
    def restore(cls, id: str, backend: Any = None, app: Celery | None = None
                ) -> GroupResult | None:
        app = app or cls._default_app or _state.get_current_app()
        store = backend or app.backend
        if store is None:
            raise ValueError("GroupResult.restore needs a result backend")
        meta = store.get_group(id)
        if meta is None:
            return None
        restored = result_from_tuple(meta["result"], app)
        if not isinstance(restored, GroupResult):
            raise ValueError(f"{id} is not a saved group")
        return restored

    def as_tuple(self) -> tuple[Any, ...]:
        parent = self.parent.as_tuple() if self.parent is not None else None
        return ((self.id, parent), [r.as_tuple() for r in self.results])

    @property
    def children(self) -> list[Any]:
        return self.results

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return other.id == self.id and other.results == self.results
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"

    def __str__(self) -> str:
        return str(self.id)


def result_from_tuple(r: Any, app: Celery | None = None) -> AsyncResult | GroupResult:
    """Rebuild an AsyncResult or a GroupResult (with members) from ``as_tuple`` form."""
    (task_id, parent), nodes = r
    parent_result = result_from_tuple(parent, app) if parent else None
    if isinstance(nodes, (list, tuple)):
        members = [result_from_tuple(n, app) for n in nodes]
        return GroupResult(task_id, members, parent=parent_result, app=app)
    return AsyncResult(task_id, app=app, parent=parent_result)  # type: ignore[arg-type]
