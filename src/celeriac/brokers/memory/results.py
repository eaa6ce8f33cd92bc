"""The in-memory result store (``memory://``, ``cache+memory://``): one process.

A thread-safe dict of encoded metadata with per-key expiry (expired keys are
invisible and removed by :meth:`cleanup` or when overwritten). ``wait`` blocks
on a Condition, so a waiter wakes the moment the result is stored. Also holds
the atomic chord join (:meth:`chord_add`) and the REVOKED rule (a task meta
is never written over a live ``REVOKED`` one) under the same lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from ... import states
from ...results.store import (
    ResultStore,
    check_chord_args,
    decode_meta,
    decode_task_meta,
    encode_meta,
    expiry_time,
    is_revoked,
)


class MemoryResultStore(ResultStore):
    """Results kept in this process's memory."""

    schemes: ClassVar[tuple[str, ...]] = ("memory", "cache+memory")

    def __init__(self, url: str = "memory://", *, expires: float | None = 86400.0,
                 options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, expires=expires, options=options)
        self._lock = threading.Lock()
        self._stored = threading.Condition(self._lock)
        self._data: dict[str, tuple[str, float | None]] = {}
        self._chords: dict[str, tuple[dict[int, str], float | None]] = {}

    def _read(self, key: str) -> str | None:
        """The live value of ``key`` (lock held)."""
        item = self._data.get(key)
        if item is None:
            return None
        value, expires_at = item
        return value if expires_at is None or expires_at > time.time() else None

    def _get_raw(self, key: str) -> str | None:
        with self._lock:
            return self._read(key)

    def _get_many_raw(self, keys: list[str]) -> list[str | bytes | None]:
        with self._lock:
            return [self._read(k) for k in keys]

    def _set_raw(self, key: str, value: str, expires: float | None) -> None:
        with self._stored:
            self._data[key] = (value, expiry_time(expires, time.time()))
            self._stored.notify_all()

    def _write_metas(self, rows: list[tuple[str, str, bool]],
                     expires: float | None) -> list[bool]:
        """Check the REVOKED rule and write under one lock (atomic for every thread)."""
        at = expiry_time(expires, time.time())
        written = []
        with self._stored:
            for key, value, guarded in rows:
                if guarded and is_revoked(self._read(key)):
                    written.append(False)
                    continue
                self._data[key] = (value, at)
                written.append(True)
            self._stored.notify_all()
        return written

    def _delete_raw(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def wait(self, task_id: str, *, timeout: float | None = None,
             interval: float = 0.05) -> dict[str, Any] | None:
        """Block until the task is ready (woken by ``set``); last seen meta on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        key = self.task_key(task_id)
        with self._stored:
            while True:
                meta = decode_task_meta(task_id, self._read(key))
                if meta is not None and meta.get("status") in states.READY_STATES:
                    return meta
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return meta
                self._stored.wait(remaining)

    # -- chord join -----------------------------------------------------------
    def chord_add(self, group_id: str, index: int, meta: Mapping[str, Any],
                  size: int) -> list[dict[str, Any]] | None:
        """Record member ``index``'s meta; return all ``size`` metas, in order, to the one
        call that completes the set (the first value recorded for an index wins)."""
        check_chord_args(index, size)
        value = encode_meta(meta)
        with self._lock:
            parts, _ = self._chords.setdefault(
                group_id, ({}, expiry_time(self.expires, time.time())))
            if index in parts:
                return None
            parts[index] = value
            if len(parts) != size:
                return None
            return [decode_meta(parts[i]) or {} for i in range(size)]

    def chord_clear(self, group_id: str) -> None:
        """Forget the join state of ``group_id``."""
        with self._lock:
            self._chords.pop(group_id, None)

    # -- housekeeping -----------------------------------------------------------
    def cleanup(self) -> int:
        now = time.time()
        with self._lock:
            dead = [k for k, (_, at) in self._data.items() if at is not None and at <= now]
            for key in dead:
                del self._data[key]
            chords = [g for g, (_, at) in self._chords.items() if at is not None and at <= now]
            for group_id in chords:
                del self._chords[group_id]
        return len(dead) + len(chords)
