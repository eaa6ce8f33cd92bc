"""The PostgreSQL result store (``postgresql://``, ``postgres://``, Celery's ``db+postgresql://``).

Stores Celery's result meta JSON (the same text every celeriac store writes, see
:mod:`celeriac.results.meta`) in ``<schema>.results`` under Celery's key names
(``celery-task-meta-<id>``, ``celery-taskset-meta-<group id>``), with an
``expires_at`` from ``result_expires``: expired rows are invisible at once and
deleted in the background (:mod:`.maintenance`), so no beat task is needed.

Celery's ``db+postgresql://`` URL selects its SQLAlchemy backend, whose tables
(``celery_taskmeta``) hold pickled rows; celeriac accepts the URL, including a
``+psycopg2``/``+psycopg`` driver part, but keeps its own JSON table: results are
readable by celeriac clients, not by Celery's database backend.

Durability: a result commits asynchronously when this process also uses a
PostgreSQL broker on the same database and schema (a worker stores a result,
then acknowledges the task: WAL keeps commits in order, so a server crash that
loses the result also loses the ack and the task runs again); otherwise with the
server's ``synchronous_commit``.

``wait`` does not poll: every write NOTIFYs the key's channel in the same
statement; a waiter LISTENs on it (the process's shared listener), then reads the
row once, so a result stored just before the LISTEN is not missed. The chord join
inserts the member row (``ON CONFLICT DO NOTHING``: the first value per index wins)
and bumps the counter in one statement; exactly one call sees it reach ``size``.

Failures: every statement retries connection errors by ``retry_policy`` (Celery's
``retry_policy`` keys in ``result_backend_transport_options``; the defaults of
:class:`~celeriac.retry.RetryPolicy`) through :func:`celeriac.retry.call`, then raises
:class:`~celeriac.exceptions.OperationalError` naming the (password-masked) URL.
``wait`` does not give up while its listener reconnects.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from ... import states
from ...results.store import ResultStore, check_chord_args, decode_meta, encode_meta
from ...retry import RetryPolicy
from . import sql
from .db import Database, Handle, parse_url

_CHUNK = 1000


def _ttl(expires: float | None) -> float | None:
    """Seconds until a row expires; None (never) for None or <= 0, as Celery's result_expires."""
    return None if expires is None or expires <= 0 else float(expires)


class PostgresResultStore(ResultStore):
    """Results in a PostgreSQL table, waited on with LISTEN/NOTIFY."""

    schemes: ClassVar[tuple[str, ...]] = ("postgresql", "postgres", "db+postgresql",
                                          "db+postgres")

    def __init__(self, url: str, *, expires: float | None = 86400.0,
                 options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, expires=expires, options=options)
        self.settings = parse_url(url, self.options, what="result_backend")
        self.schema = self.settings.schema
        self._handle = Handle(self.settings)
        self.retry_policy = RetryPolicy.from_celery(self.options.get("retry_policy"))

    @property
    def db(self) -> Database:
        return self._handle.db

    def _run(self, name: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        return self.db.execute(name, params, policy=self.retry_policy, what=f"results {name}")

    # -- raw storage ---------------------------------------------------------------
    def _get_raw(self, key: str) -> str | None:
        rows = self._run("result_get", {"key": key})
        return None if not rows else str(rows[0][0])

    def _get_many_raw(self, keys: list[str]) -> list[str | bytes | None]:
        found: dict[str, str] = {}
        for start in range(0, len(keys), _CHUNK):
            found.update(self._run("result_get_many", {"keys": keys[start:start + _CHUNK]}))
        return [found.get(k) for k in keys]

    def _set_raw(self, key: str, value: str, expires: float | None) -> None:
        self._run("result_set", {"key": key, "value": value, "expires": _ttl(expires),
                                 "fast": self.db.broker_attached})
        self.db.maintenance.note(1)

    def _delete_raw(self, key: str) -> None:
        self._run("result_delete", {"key": key})

    def _write_metas(self, rows: list[tuple[str, str, bool]],
                     expires: float | None) -> list[bool]:
        """Task metas under the REVOKED rule, checked and written by one statement per
        chunk (one commit for a worker's batch); per row, whether it was written."""
        written: list[bool] = []
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start:start + _CHUNK]
            if len({key for key, _, _ in chunk}) < len(chunk):  # one key twice: in order
                written += [self._write_chunk([row], expires)[0] for row in chunk]
            else:
                written += self._write_chunk(chunk, expires)
        self.db.maintenance.note(len(rows))
        return written

    def _write_chunk(self, rows: list[tuple[str, str, bool]],
                     expires: float | None) -> list[bool]:
        stored = {key for key, *_ in self._run("result_write", {
            "keys": [k for k, _, _ in rows], "values": [v for _, v, _ in rows],
            "guards": [g for _, _, g in rows], "expires": _ttl(expires),
            "fast": self.db.broker_attached})}
        return [key in stored for key, _, _ in rows]

    def wait(self, task_id: str, *, timeout: float | None = None,
             interval: float = 0.05) -> dict[str, Any] | None:
        """Wait until the task is ready: LISTEN on its channel, then read on every NOTIFY."""
        channel = sql.channel(self.schema, "r", self.task_key(task_id))
        listener = self.db.listener
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        listener.subscribe([channel])
        try:
            while True:
                seen = listener.version([channel])
                meta = self.get(task_id)
                if meta is not None and meta.get("status") in states.READY_STATES:
                    return meta
                left = deadline - time.monotonic()
                if left <= 0:
                    return meta
                # a lost listener connection re-checks twice a second until it is back
                nap = left if listener.listening([channel]) else min(left, 0.5)
                listener.wait([channel], seen, min(nap, self.settings.polling_interval))
        finally:
            listener.unsubscribe([channel])

    # -- chord join ------------------------------------------------------------------
    def chord_add(self, group_id: str, index: int, meta: Mapping[str, Any],
                  size: int) -> list[dict[str, Any]] | None:
        """Record member ``index``; return all ``size`` metas, in order, to the one call
        that completes the set (the first value recorded for an index wins)."""
        check_chord_args(index, size)
        rows = self._run("chord_add", {"group_id": group_id, "idx": index,
                                       "value": encode_meta(meta),
                                       "expires": _ttl(self.expires)})
        if not rows or rows[0][0] != size:
            return None
        parts = self._run("chord_parts", {"group_id": group_id})
        return [decode_meta(value) or {} for (value,) in parts]

    def chord_clear(self, group_id: str) -> None:
        self._run("chord_clear", {"group_id": group_id})

    # -- housekeeping ------------------------------------------------------------------
    def cleanup(self) -> int:
        [(count,)] = self._run("result_cleanup", {})
        return int(count)

    def close(self) -> None:
        self._handle.close()
