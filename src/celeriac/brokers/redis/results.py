"""The Redis result store, written exactly as Celery's Redis result backend writes.

Keys (with ``global_keyprefix``, to which Celery appends ``_`` unless it ends
in one of ``:_-.``):

* ``celery-task-meta-<task_id>``: task meta JSON, written with ``SETEX <key>
  <expires> <json>; PUBLISH <key> <json>`` (the channel has the key's name), so
  Celery's ``AsyncResult.get()`` wakes up, inside one script
  (:data:`~.result_scripts.WRITE_METAS`) that refuses a write over a stored
  ``REVOKED`` meta (the REVOKED rule of :mod:`celeriac.results.store`) and, for
  :meth:`~RedisResultStore.set_unless_succeeded`, over a ``SUCCESS`` one, in the
  same atomic step (no read before the write);
* ``celery-taskset-meta-<group_id>``: ``GroupResult.save`` meta, same write;
* chord join, Celery 5.5 layout: ``celery-taskset-meta-<gid>.j`` (zset,
  member ``[1, task_id, status, result]`` JSON, score = index), ``.s`` (size),
  ``.t`` (Celery's total adjustment, read only), plus ``.d`` (set of indexes
  seen: duplicates are ignored), ``.m`` (hash index -> full meta JSON, what
  ``chord_add`` returns) and ``.c`` (``done`` once the join fired).
  A Celery client's chord: Celery sets ``.s`` before its last header task, and
  ``chord_add_celery_sized`` reads it in the script (earlier members wait).
  Celery 5.5 readers understand ``.j``/``.s``; a Celery 5.7 worker joining the
  *same* chord would use ``tid:index`` members in ``.d`` and claim tokens in
  ``.c``, so mixed fleets must not share one chord.

``wait`` does not poll. With hiredis 3 and a RESP3 server (Redis 6+), without
TLS, one connection per process and configuration (:mod:`.result_waits`) carries
every thread's wait: ``SUBSCRIBE <key>`` and ``GET <key>`` in one write, run in
that order, so a result written just before the subscription is in the ``GET``'s
reply, and one written after arrives as a push. Otherwise the pub/sub listener of
:mod:`.listener` (RESP2, a daemon thread) subscribes and the waiter GETs the key
once the subscription is confirmed. After a reconnect either subscribes again and
every waiter GETs again.
"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any, ClassVar

import redis

from ... import serialization, states
from ...results.store import ResultStore, decode_meta, decode_task_meta, encode_meta
from .client import (
    Connection,
    Direct,
    PerProcess,
    connection,
    get_client,
    retrying,
    run_script,
)
from .durability import retry_policy_for
from .listener import ResultListener, listener_for
from .result_scripts import CHORD_ADD, WRITE_METAS
from .result_waits import ResultWaits, Unsupported, usable

_SCRIPTS = {"chord_add": CHORD_ADD, "write_metas": WRITE_METAS}

__all__ = ["RedisResultStore", "ResultListener", "listener_for", "waits_for"]

#: the RESP3 wait connection of each process and configuration (None: not usable there)
_waits: PerProcess[ResultWaits | None] = PerProcess()


def waits_for(url: str, options: Mapping[str, Any]) -> ResultWaits | None:
    """The process-wide :class:`ResultWaits` for ``url`` (a new one after a fork), or None
    where it does not apply (TLS, no hiredis 3, or the server refused RESP3 before)."""
    key = (url, repr(sorted((str(k), repr(v)) for k, v in options.items())))

    def make() -> ResultWaits | None:
        client = get_client(url, options)
        return ResultWaits(client) if usable(client) else None

    return _waits.get(key, make)


def _refused(url: str, options: Mapping[str, Any]) -> None:
    """The server refused RESP3: this process's waits for ``url`` use pub/sub on RESP2."""
    key = (url, repr(sorted((str(k), repr(v)) for k, v in options.items())))
    _waits.replace(key, None)


def _celery_prefix(prefix: str) -> str:
    if prefix and prefix[-1] not in ":_-.":
        return prefix + "_"
    return prefix


class RedisResultStore(ResultStore):
    """Celery-compatible Redis result store with pub/sub waits and an atomic chord join."""

    schemes: ClassVar[tuple[str, ...]] = ("redis", "rediss", "sentinel")
    reads_celery_chord_size: ClassVar[bool] = True

    def __init__(self, url: str, *, expires: float | None = 86400.0,
                 options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, expires=expires, options=options)
        self.prefix = _celery_prefix(str(self.options.get("global_keyprefix") or ""))
        self.retry_policy = retry_policy_for(url, self.options)
        #: (pid, client, scripts, direct connection), replaced as a whole so
        #: threads never see a half-built connection; rebuilt after a fork
        self._conn: Connection | None = None
        #: (pid, this process's RESP3 wait connection or None), see :meth:`_waits`
        self._wait_conn: tuple[int, ResultWaits | None] | None = None

    @property
    def client(self) -> redis.Redis:
        """This process's client (a new one after a fork)."""
        return self._connection()[1]

    def _connection(self) -> Connection:
        conn = self._conn = connection(self.url, self.options, _SCRIPTS, self._conn)
        return conn

    @property
    def direct(self) -> Direct:
        """This thread's raw connection for reads and writes (see :class:`Direct`)."""
        return self._connection()[3]

    def _retrying(self, what: str, call: Any) -> Any:
        return retrying(self.url, what, call, self.retry_policy)

    # -- keys ---------------------------------------------------------------------
    def own_key(self, name: str) -> str:
        return self.prefix + name

    def task_key(self, task_id: str) -> str:
        return self.prefix + super().task_key(task_id)

    def group_key(self, group_id: str) -> str:
        return self.prefix + super().group_key(group_id)

    # -- raw storage -------------------------------------------------------------------
    def _get_raw(self, key: str) -> bytes | None:
        value: bytes | None = self._retrying("get", partial(self.direct.execute, "GET", key))
        return value

    def _get_many_raw(self, keys: list[str]) -> list[str | bytes | None]:
        if not keys:
            return []
        values: list[str | bytes | None] = self._retrying(
            "mget", partial(self.direct.execute, "MGET", *keys))
        return values

    def _delete_raw(self, key: str) -> None:
        self._retrying("delete", partial(self.client.delete, key))

    def _set_raw(self, key: str, value: str, expires: float | None) -> None:
        self._retrying("set", partial(self._write, [(key, value)], expires))

    def _write(self, items: list[tuple[str, str]], expires: float | None) -> None:
        """``MULTI; SETEX; PUBLISH; ...; EXEC`` (Celery's exact write) in one round trip."""
        commands: list[tuple[Any, ...]] = [("MULTI",)]
        for key, value in items:
            if expires is None or expires <= 0:
                commands.append(("SET", key, value))
            elif float(expires).is_integer():
                commands.append(("SETEX", key, int(expires), value))
            else:
                commands.append(("SET", key, value, "PX", max(1, int(expires * 1000))))
            commands.append(("PUBLISH", key, value))
        commands.append(("EXEC",))
        replies = self.direct.pipeline(commands)
        for reply in replies[-1] or ():
            if isinstance(reply, redis.ResponseError):
                raise reply

    def _write_metas(self, rows: list[tuple[str, str, bool]],
                     expires: float | None) -> list[bool]:
        """Task metas in one script per 1,000 (each ``SET[EX]`` + ``PUBLISH``, as Celery
        writes them), refused over a stored REVOKED meta in the same atomic step."""
        return self._write_guarded([(key, value, int(guarded)) for key, value, guarded in rows],
                                   expires)

    def set_unless_succeeded(self, task_id: str, meta: Mapping[str, Any], *,
                             expires: float | None = -1) -> bool:
        """One script call: the REVOKED rule and "never over SUCCESS" checked and the
        meta written in one atomic step (no read before the write)."""
        guard = 2 if meta.get("status") == states.REVOKED else 3
        return self._write_guarded([(self.task_key(task_id), encode_meta(meta), guard)],
                                   self.expires if expires == -1 else expires)[0]

    @staticmethod
    def ttl_argument(expires: float | None) -> str:
        """The scripts' expiry argument: "" (none), "ex:<s>" or "px:<ms>"."""
        if expires is None or expires <= 0:
            return ""
        if float(expires).is_integer():
            return f"ex:{int(expires)}"
        return f"px:{max(1, int(expires * 1000))}"

    def guarded_rows(self, items: Iterable[tuple[str, Mapping[str, Any]]]
                     ) -> list[tuple[str, str, int]]:
        """``(key, meta, guard)`` of task metas written under the REVOKED rule (what
        ``set_many`` writes; the broker's ``SETTLE`` script takes them)."""
        return [(self.task_key(tid), encode_meta(meta), int(meta.get("status") != states.REVOKED))
                for tid, meta in items]

    def _write_guarded(self, rows: list[tuple[str, str, int]],
                       expires: float | None) -> list[bool]:
        ttl = self.ttl_argument(expires)
        written: list[bool] = []
        for start in range(0, len(rows), 1000):
            part = rows[start:start + 1000]
            args = [ttl] + [x for _, value, guard in part for x in (value, guard)]
            flags = self._retrying("set", partial(self._run_script, "write_metas",
                                                  [key for key, _, _ in part], args))
            written.extend(bool(int(f)) for f in flags)
        return written

    def _run_script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run a script on this thread's raw connection (loaded again after NOSCRIPT)."""
        _, _, scripts, direct = self._connection()
        return run_script(direct, scripts[name], keys, args)

    # -- waiting -----------------------------------------------------------------------
    def _listener(self) -> ResultListener:
        return listener_for(self.url, self.options)

    def _waits(self) -> ResultWaits | None:
        """This process's RESP3 wait connection (None: waits use :meth:`_listener`)."""
        found = self._wait_conn
        if found is None or found[0] != os.getpid():
            found = self._wait_conn = (os.getpid(), waits_for(self.url, self.options))
        return found[1]

    def wait(self, task_id: str, *, timeout: float | None = None,
             interval: float = 0.05) -> dict[str, Any] | None:
        """Wait for a ready state on pub/sub; return the last meta seen on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if deadline is not None and timeout is not None and timeout <= 0:
            return self.get(task_id)
        waits = self._waits()
        if waits is not None:
            try:
                return self._wait_resp3(waits, task_id, deadline)
            except Unsupported:
                _refused(self.url, self.options)
                self._wait_conn = (os.getpid(), None)
        return self._wait_listening(task_id, deadline)

    def _wait_resp3(self, waits: ResultWaits, task_id: str,
                    deadline: float | None) -> dict[str, Any] | None:
        meta: dict[str, Any] | None = None
        wait = waits.join(self.task_key(task_id))
        try:
            while True:
                item = waits.next(wait, deadline)
                if item is None:  # the deadline passed
                    return meta if meta is not None else self.get(task_id)
                raw = item[1]
                if isinstance(raw, Exception):
                    raise raw
                if raw is None:
                    continue
                meta = decode_task_meta(task_id, raw)
                if meta is not None and meta.get("status") in states.READY_STATES:
                    return meta
        finally:
            waits.leave(wait)

    def _wait_listening(self, task_id: str,
                        deadline: float | None) -> dict[str, Any] | None:
        """:meth:`wait` through the RESP2 pub/sub listener (:mod:`.listener`)."""
        meta: dict[str, Any] | None = None
        key = self.task_key(task_id)
        listener = self._listener()
        inbox = listener.subscribe(key)
        try:
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return meta if meta is not None else self.get(task_id)
                try:
                    kind, payload = inbox.get(timeout=remaining)
                except queue.Empty:
                    continue
                if kind == "message" and payload is not None:
                    meta = decode_task_meta(task_id, payload)
                else:  # subscribed (or re-subscribed after a reconnect): read the key
                    meta = self.get(task_id)
                if meta is not None and meta.get("status") in states.READY_STATES:
                    return meta
        finally:
            listener.unsubscribe(key, inbox)

    # -- chords ------------------------------------------------------------------------
    def _chord_keys(self, group_id: str) -> list[str]:
        base = self.group_key(group_id)
        return [f"{base}.{suffix}" for suffix in ("j", "d", "s", "t", "c", "m")]

    def chord_add(self, group_id: str, index: int, meta: Mapping[str, Any],
                  size: int) -> list[dict[str, Any]] | None:
        """Record member ``index``; the one call completing the set gets all metas, ordered."""
        return self._chord_add(group_id, index, meta, size)

    def chord_add_celery_sized(self, group_id: str, index: int,
                               meta: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        """Record member ``index`` of a Celery client's chord: the size is read from
        Celery's ``.s`` key in the same script (Celery sets it just before it publishes
        the last header task); a member recorded before the key exists waits."""
        return self._chord_add(group_id, index, meta, None)

    def _chord_add(self, group_id: str, index: int, meta: Mapping[str, Any],
                   size: int | None) -> list[dict[str, Any]] | None:
        member = serialization.json_dumps(
            [1, meta.get("task_id"), meta.get("status"), meta.get("result")])
        ttl = "" if self.expires is None else str(max(1, int(self.expires)))
        client = self.client
        reply = self._retrying("chord_add", partial(
            self._connection()[2]["chord_add"], keys=self._chord_keys(group_id),
            args=[int(index), member, "" if size is None else int(size), ttl,
                  encode_meta(meta)], client=client))
        if not reply:
            return None
        return [decode_meta(raw) or {} for raw in reply]

    def chord_clear(self, group_id: str) -> None:
        """Forget a chord's join state."""
        self._retrying("chord_clear", partial(self.client.delete, *self._chord_keys(group_id)))

    def close(self) -> None:
        """Drop this instance's reference; the process-wide pool and listener stay."""
        self._conn = None
