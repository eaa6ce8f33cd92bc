"""The result store interface, and Celery's result metadata format.

A result store keeps one metadata dict per task id, exactly as Celery's
key/value backends store it::

    {"status": "SUCCESS", "result": 4, "traceback": null, "children": [],
     "date_done": "2026-11-21T13:36:40.118348+00:00", "task_id": "..."}

plus ``group_id``/``parent_id`` when set and ``name, args, kwargs, worker,
retries, queue`` with ``result_extended``. Values are tagged JSON (see
:mod:`celeriac.serialization`). Group metadata (``GroupResult.save``) is
stored the same way under the group id.

Subclasses implement ``_get_raw``/``_set_raw``/``_delete_raw`` (and the group
twins); ``wait`` polls with a short backoff unless a store overrides it with
a push mechanism (Redis pub/sub).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from .. import serialization, states


def encode_meta(meta: Mapping[str, Any]) -> str:
    return serialization.json_dumps(dict(meta))


def decode_meta(raw: str | bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    value = serialization.json_loads(raw)
    return value if isinstance(value, dict) else None


def expiry_time(expires: float | None, now: float) -> float | None:
    """Absolute expiry for a relative ``expires``; None or <= 0 means never (as Celery)."""
    return None if expires is None or expires <= 0 else now + float(expires)


def check_chord_args(index: int, size: int) -> None:
    """Refuse a chord member index outside ``0..size-1`` (every store's ``chord_add``)."""
    if not 0 <= index < size:
        raise ValueError(f"chord member index {index} is outside 0..{size - 1}")


class ResultStore(abc.ABC):
    """Base class of result stores."""

    schemes: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        url: str,
        *,
        expires: float | None = 86400.0,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.expires = expires
        self.options = dict(options or {})

    # -- raw storage, per store -------------------------------------------
    @abc.abstractmethod
    def _get_raw(self, key: str) -> str | bytes | None: ...

    @abc.abstractmethod
    def _set_raw(self, key: str, value: str, expires: float | None) -> None: ...

    @abc.abstractmethod
    def _delete_raw(self, key: str) -> None: ...

    def _get_many_raw(self, keys: list[str]) -> list[str | bytes | None]:
        return [self._get_raw(k) for k in keys]

    # -- task results -------------------------------------------------------
    def own_key(self, name: str) -> str:
        """The key of one of celeriac's own records (worker heartbeats), under the
        store's key prefix where it has one."""
        return name

    def task_key(self, task_id: str) -> str:
        return f"celery-task-meta-{task_id}"

    def group_key(self, group_id: str) -> str:
        return f"celery-taskset-meta-{group_id}"

    def set(self, task_id: str, meta: Mapping[str, Any], *, expires: float | None = -1) -> None:
        """Store ``meta`` for ``task_id``; ``expires=-1`` means the store default."""
        self._set_raw(self.task_key(task_id), encode_meta(meta),
                      self.expires if expires == -1 else expires)

    def set_many(self, items: Iterable[tuple[str, Mapping[str, Any]]], *,
                 expires: float | None = -1) -> None:
        """Store several ``(task_id, meta)`` pairs; stores override this to batch."""
        for task_id, meta in items:
            self.set(task_id, meta, expires=expires)

    def get(self, task_id: str) -> dict[str, Any] | None:
        return decode_meta(self._get_raw(self.task_key(task_id)))

    def get_many(self, task_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(task_ids)
        raws = self._get_many_raw([self.task_key(i) for i in ids])
        out: dict[str, dict[str, Any]] = {}
        for task_id, raw in zip(ids, raws, strict=True):
            meta = decode_meta(raw)
            if meta is not None:
                out[task_id] = meta
        return out

    def delete(self, task_id: str) -> None:
        self._delete_raw(self.task_key(task_id))

    def wait(self, task_id: str, *, timeout: float | None = None,
             interval: float = 0.05) -> dict[str, Any] | None:
        """Wait until the task is ready; return its meta, or the last seen meta on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        while True:
            meta = self.get(task_id)
            if meta is not None and meta.get("status") in states.READY_STATES:
                return meta
            if deadline is not None and time.monotonic() >= deadline:
                return meta
            wait = pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic()))
            time.sleep(wait)
            pause = min(pause * 2, max(interval, 0.001))

    # -- groups ---------------------------------------------------------------
    def save_group(self, group_id: str, meta: Mapping[str, Any]) -> None:
        self._set_raw(self.group_key(group_id), encode_meta(meta), self.expires)

    def get_group(self, group_id: str) -> dict[str, Any] | None:
        return decode_meta(self._get_raw(self.group_key(group_id)))

    def delete_group(self, group_id: str) -> None:
        self._delete_raw(self.group_key(group_id))

    # -- chord join -------------------------------------------------------------
    @abc.abstractmethod
    def chord_add(self, group_id: str, index: int, meta: Mapping[str, Any],
                  size: int) -> list[dict[str, Any]] | None:
        """Atomically record header member ``index`` (0..size-1) of chord ``group_id``.

        ``meta`` is the member's result meta (``task_id``, ``status``, ``result``).
        Recording is idempotent: the first meta stored for an index wins and a
        repeated call for an index already recorded does not count twice. Returns
        the ordered list of all ``size`` metas exactly once overall, to the call
        that completes the set; None to every other call.
        """

    @abc.abstractmethod
    def chord_clear(self, group_id: str) -> None:
        """Forget the join state of chord ``group_id`` (after its body was applied)."""

    # -- housekeeping -----------------------------------------------------------
    def cleanup(self) -> int:
        """Remove expired entries where the store does not expire them itself."""
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
