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

**The REVOKED rule.** A task meta is never written over a stored ``REVOKED``
one (unless the new meta is ``REVOKED`` too): a revoked task stays revoked
even when a worker that was already running it finishes later. Every store
makes the check and the write one atomic step (:meth:`ResultStore._write_metas`:
Redis Lua, a conditional SQLite upsert, a lock); ``set``/``set_many`` report
what was written.

Reading: :func:`decode_task_meta` checks what it reads and raises
:class:`~celeriac.exceptions.ResultDecodeError` naming the task for anything
that is not Celery's meta.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, ClassVar

from .. import serialization, states
from ..exceptions import DecodeError, ResultDecodeError


def encode_meta(meta: Mapping[str, Any]) -> str:
    return serialization.json_dumps(dict(meta))


def decode_meta(raw: str | bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    value = serialization.json_loads(raw)
    return value if isinstance(value, dict) else None


#: meta key -> (types allowed, what to say)
_META_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "status": ((str,), "a state name"),
    "traceback": ((str, type(None)), "text or null"),
    "children": ((list, type(None)), "a list or null"),
    "date_done": ((str, type(None)), "an ISO 8601 date-time or null"),
}


def decode_task_meta(task_id: str, raw: str | bytes | None) -> dict[str, Any] | None:
    """A task's stored meta, checked; ResultDecodeError (naming the task) if malformed."""
    if raw is None:
        return None
    try:
        value = serialization.json_loads(raw)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ResultDecodeError(task_id, f"not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise ResultDecodeError(task_id, f"expected an object, got {type(value).__name__}")
    if "status" not in value:
        raise ResultDecodeError(task_id, "no status")
    for key, (types, expected) in _META_FIELDS.items():
        if key in value and not isinstance(value[key], types):
            raise ResultDecodeError(task_id, f"{key}: expected {expected}, "
                                             f"got {value[key]!r:.80}")
    if isinstance(value.get("date_done"), str):
        try:
            datetime.fromisoformat(value["date_done"])
        except ValueError as exc:
            raise ResultDecodeError(task_id, f"date_done: {exc}") from exc
    return value


def is_revoked(raw: str | bytes | None) -> bool:
    """True when ``raw`` is a live meta whose status is REVOKED (a malformed one is not)."""
    if raw is None:
        return False
    try:
        value = serialization.json_loads(raw)
    except (ValueError, TypeError, UnicodeDecodeError):
        return False
    return isinstance(value, dict) and value.get("status") == states.REVOKED


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
    #: :meth:`chord_add_celery_sized` reads the size a Celery client stored
    #: (``celery-taskset-meta-<gid>.s``, Celery's Redis backend) in the same atomic step
    reads_celery_chord_size: ClassVar[bool] = False
    #: the meta it is given carries ``periodic_task_name`` when the task was sent by a
    #: django-celery-beat entry (its ``TaskResult`` column)
    records_periodic_task_name: ClassVar[bool] = False
    #: the metas given to ``set``/``set_many`` by the worker carry the task's ``reply_to``
    #: and ``correlation_id`` (``rpc://``: results are sent there, not stored)
    wants_reply_to: ClassVar[bool] = False

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

    def set(self, task_id: str, meta: Mapping[str, Any], *, expires: float | None = -1) -> bool:
        """Store ``meta`` for ``task_id`` (``expires=-1``: the store default); False when
        refused by the REVOKED rule."""
        return self.set_many([(task_id, meta)], expires=expires)[0]

    def set_many(self, items: Iterable[tuple[str, Mapping[str, Any]]], *,
                 expires: float | None = -1) -> list[bool]:
        """Store several ``(task_id, meta)`` pairs under the REVOKED rule; per pair, whether
        it was written."""
        rows = [(self.task_key(tid), encode_meta(meta), meta.get("status") != states.REVOKED)
                for tid, meta in items]
        if not rows:
            return []
        return self._write_metas(rows, self.expires if expires == -1 else expires)

    def set_unless_succeeded(self, task_id: str, meta: Mapping[str, Any], *,
                             expires: float | None = -1) -> bool:
        """:meth:`set`, refused over a stored ``SUCCESS`` meta as well (the rule every
        other state is stored under: a redelivery or a late revoke never overwrites a
        success). This default reads, then writes; the Redis store makes both one
        atomic step."""
        try:
            current = self.get(task_id)
        except DecodeError:
            current = None  # a malformed meta is replaced
        if current is not None and current.get("status") == states.SUCCESS:
            return False
        return self.set(task_id, meta, expires=expires)

    def _write_metas(self, rows: list[tuple[str, str, bool]],
                     expires: float | None) -> list[bool]:
        """Write ``(key, value, guarded)`` rows; a guarded row is refused over a live
        REVOKED meta. Stores override this to check and write atomically; this default
        (read, then write) is for stores without a way to."""
        written = []
        for key, value, guarded in rows:
            if guarded and is_revoked(self._get_raw(key)):
                written.append(False)
                continue
            self._set_raw(key, value, expires)
            written.append(True)
        return written

    def get(self, task_id: str) -> dict[str, Any] | None:
        return decode_task_meta(task_id, self._get_raw(self.task_key(task_id)))

    def get_many(self, task_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(task_ids)
        raws = self._get_many_raw([self.task_key(i) for i in ids])
        out: dict[str, dict[str, Any]] = {}
        for task_id, raw in zip(ids, raws, strict=True):
            meta = decode_task_meta(task_id, raw)
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

    def on_publish(self) -> None:  # noqa: B027 - optional hook
        """Called before a task is sent (``rpc://`` declares the caller's reply queue)."""

    def check_chords(self) -> None:  # noqa: B027 - optional hook
        """Raise ImproperlyConfigured when this store cannot join a chord."""

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

    def chord_add_celery_sized(self, group_id: str, index: int,
                               meta: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        """:meth:`chord_add` for a chord sent by a Celery client: the size is the one
        Celery stored, read in the same atomic step (stores with
        :attr:`reads_celery_chord_size`; a member recorded before it is stored waits)."""
        raise NotImplementedError(f"{type(self).__name__} cannot read Celery's chord size")

    @abc.abstractmethod
    def chord_clear(self, group_id: str) -> None:
        """Forget the join state of chord ``group_id`` (after its body was applied)."""

    # -- housekeeping -----------------------------------------------------------
    def cleanup(self) -> int:
        """Remove expired entries where the store does not expire them itself."""
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
