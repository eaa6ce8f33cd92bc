"""Result stores on Django: ``result_backend = 'django-db'`` and ``'django-cache'``.

``django-db`` (:class:`DatabaseResultStore`) keeps results in the
:mod:`~celeriac.contrib.django.results.models` tables through the ORM, on the
database alias given by the transport option ``database`` (default: Django's
router / ``default``). Writes are single upserts (``INSERT ... ON CONFLICT``),
batches are one statement; ``date_started`` is set when ``STARTED`` is stored;
``periodic_task_name`` is filled from the running task's message when known.
The chord join inserts the member's row and bumps the counter in one
transaction whose first statement is a write (no lock upgrade on SQLite; row
locks on PostgreSQL), so exactly one call completes a chord.

``django-cache`` lives in :mod:`~celeriac.contrib.django.results.cache_store`.

Connections are checked with :func:`celeriac.contrib.django.db.fresh` before
use, so a long-running worker honours ``CONN_MAX_AGE``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

from celeriac import serialization, states
from celeriac.app import state as _state
from celeriac.results.store import (
    ResultStore,
    check_chord_args,
    decode_meta,
    encode_meta,
)

from ..db import db_time, fresh, off_loop
from ..fixup import django_setup

TASK_PREFIX, GROUP_PREFIX = "celery-task-meta-", "celery-taskset-meta-"
_COLUMNS = ("status", "result", "traceback", "task_id")
_UPDATE_FIELDS = ["status", "result", "traceback", "meta", "date_done", "task_name", "task_args",
                  "task_kwargs", "worker", "content_type", "content_encoding", "expires_at",
                  "periodic_task_name"]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _expires_at(expires: float | None) -> datetime | None:
    if expires is None or expires <= 0:
        return None
    return _utcnow() + timedelta(seconds=float(expires))


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def _db_time(value: datetime | None) -> datetime | None:
    stored: datetime | None = db_time(value)
    return stored


def _periodic_task_name(task_id: str) -> str | None:
    """The beat entry that sent the running task, when this thread runs ``task_id``."""
    task = _state.get_current_worker_task()
    request = task.request if task is not None else None
    if request is None or request.id != task_id:
        return None
    for source in (request.headers, request.properties):
        if isinstance(source, dict) and source.get("periodic_task_name"):
            return str(source["periodic_task_name"])
    return None


def row_values(task_id: str, meta: Mapping[str, Any], expires: float | None) -> dict[str, Any]:
    """Column values of the ``TaskResult`` row storing ``meta``."""
    extra = {k: v for k, v in meta.items() if k not in _COLUMNS}
    values: dict[str, Any] = {
        "task_id": task_id, "status": meta.get("status") or states.PENDING,
        "result": serialization.json_dumps(meta.get("result")),
        "traceback": meta.get("traceback"), "meta": serialization.json_dumps(extra),
        "date_done": _db_time(_parse_time(meta.get("date_done"))),
        "task_name": meta.get("name"), "worker": meta.get("worker"),
        "task_args": serialization.json_dumps(meta["args"]) if "args" in meta else None,
        "task_kwargs": serialization.json_dumps(meta["kwargs"]) if "kwargs" in meta else None,
        "content_type": "application/json", "content_encoding": "utf-8",
        "expires_at": _db_time(_expires_at(expires)),
        "periodic_task_name": meta.get("periodic_task_name") or _periodic_task_name(task_id),
    }
    if values["status"] == states.STARTED:
        values["date_started"] = _db_time(_utcnow())
    return values


def meta_of(row: Any) -> dict[str, Any]:
    """The Celery result metadata a ``TaskResult`` row stores."""
    meta: dict[str, Any] = {"status": row.status,
                            "result": serialization.json_loads(row.result) if row.result else None,
                            "traceback": row.traceback}
    extra = serialization.json_loads(row.meta) if row.meta else None
    if isinstance(extra, dict):
        meta.update(extra)
    meta["task_id"] = row.task_id
    return meta


class DatabaseResultStore(ResultStore):
    """``django-db``: results in the ``TaskResult``/``GroupResult`` tables."""

    schemes: ClassVar[tuple[str, ...]] = ("django-db",)
    records_periodic_task_name: ClassVar[bool] = True

    def __init__(self, url: str = "django-db", *, expires: float | None = 86400.0,
                 options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, expires=expires, options=options)
        self.database: str | None = self.options.get("database")

    # -- helpers -----------------------------------------------------------------------
    def _models(self) -> Any:
        django_setup()  # a client process may reach the store before Django is set up
        from . import models

        return models

    def _alias(self, model: Any, write: bool) -> str:
        from django.db import router

        if self.database:
            return self.database
        route = router.db_for_write if write else router.db_for_read
        return str(route(model))

    def _tasks(self, write: bool = False) -> Any:
        model = self._models().TaskResult
        alias = self._alias(model, write)
        fresh(alias)
        return model.objects.using(alias)

    @staticmethod
    def _live(queryset: Any) -> Any:
        from django.db.models import Q

        now = _db_time(_utcnow())
        return queryset.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))

    def _expiry(self, expires: float | None) -> float | None:
        return self.expires if expires == -1 else expires

    # -- task results ------------------------------------------------------------------
    def set(self, task_id: str, meta: Mapping[str, Any], *, expires: float | None = -1) -> bool:
        return self.set_many([(task_id, meta)], expires=expires)[0]

    @off_loop
    def set_many(self, items: Iterable[tuple[str, Mapping[str, Any]]], *,
                 expires: float | None = -1) -> list[bool]:
        """Store every item under the REVOKED rule; per item, whether it was written.

        One transaction: an insert that never overwrites (``ON CONFLICT DO NOTHING``),
        then ``UPDATE ... WHERE status <> 'REVOKED'`` per row (a REVOKED write is
        unconditional), so the check and the write are one statement.
        """
        pairs = list(items)
        expiry = self._expiry(expires)
        latest = {task_id: row_values(task_id, meta, expiry) for task_id, meta in pairs}
        if not latest:
            return []
        written = self._write_rows(latest)
        return [written[task_id] for task_id, _ in pairs]

    def _write_rows(self, latest: dict[str, dict[str, Any]]) -> dict[str, bool]:
        from django.db import transaction

        model = self._models().TaskResult
        manager = self._tasks(write=True)
        written: dict[str, bool] = {}
        # The first statement writes (no read-then-write lock upgrade on SQLite): insert
        # the rows that do not exist, never overwriting; then update each row unless it
        # is REVOKED (a REVOKED write is unconditional). The update's WHERE is the check.
        with transaction.atomic(using=manager.db):
            manager.bulk_create([model(**values) for values in latest.values()],
                                ignore_conflicts=True)
            for task_id, values in latest.items():
                rows = manager.filter(task_id=task_id)
                if values["status"] != states.REVOKED:
                    rows = rows.exclude(status=states.REVOKED)
                fields = [*_UPDATE_FIELDS, "date_started"] if "date_started" in values \
                    else _UPDATE_FIELDS
                written[task_id] = bool(rows.update(**{f: values[f] for f in fields}))
        return written

    @off_loop
    def get(self, task_id: str) -> dict[str, Any] | None:
        row = self._live(self._tasks().filter(task_id=task_id)).first()
        return meta_of(row) if row is not None else None

    @off_loop
    def get_many(self, task_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(task_ids)
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):
            for row in self._live(self._tasks().filter(task_id__in=ids[start:start + 500])):
                out[row.task_id] = meta_of(row)
        return out

    @off_loop
    def delete(self, task_id: str) -> None:
        self._tasks(write=True).filter(task_id=task_id).delete()

    # -- the key/value form the base class speaks --------------------------------------
    def _entries(self, write: bool = False) -> Any:
        model = self._models().StoreEntry
        alias = self._alias(model, write)
        fresh(alias)
        return model.objects.using(alias)

    @off_loop
    def _get_raw(self, key: str) -> str | None:
        if key.startswith(GROUP_PREFIX):
            meta = self.get_group(key[len(GROUP_PREFIX):])
        elif key.startswith(TASK_PREFIX):
            meta = self.get(key[len(TASK_PREFIX):])
        else:
            row = self._live(self._entries().filter(key=key)).first()
            return None if row is None else str(row.value)
        return None if meta is None else encode_meta(meta)

    @off_loop
    def _set_raw(self, key: str, value: str, expires: float | None) -> None:
        if key.startswith(GROUP_PREFIX):
            self._save_group(key[len(GROUP_PREFIX):], decode_meta(value) or {}, expires)
        elif key.startswith(TASK_PREFIX):
            self.set(key[len(TASK_PREFIX):], decode_meta(value) or {}, expires=expires)
        else:  # write first (insert, never overwriting; then update): no read-then-write
            # lock upgrade, which SQLite refuses at once when another process wrote meanwhile
            from django.db import transaction

            entries = self._entries(write=True)
            values = {"value": value, "expires_at": _db_time(_expires_at(expires))}
            with transaction.atomic(using=entries.db):
                entries.bulk_create([entries.model(key=key, **values)], ignore_conflicts=True)
                entries.filter(key=key).update(**values)

    @off_loop
    def _delete_raw(self, key: str) -> None:
        if key.startswith(GROUP_PREFIX):
            self.delete_group(key[len(GROUP_PREFIX):])
        elif key.startswith(TASK_PREFIX):
            self.delete(key[len(TASK_PREFIX):])
        else:
            self._entries(write=True).filter(key=key).delete()

    # -- groups ----------------------------------------------------------------------
    def _groups(self, write: bool = False) -> Any:
        model = self._models().GroupResult
        alias = self._alias(model, write)
        fresh(alias)
        return model.objects.using(alias)

    @off_loop
    def save_group(self, group_id: str, meta: Mapping[str, Any]) -> None:
        self._save_group(group_id, meta, self.expires)

    def _save_group(self, group_id: str, meta: Mapping[str, Any], expires: float | None) -> None:
        self._groups(write=True).update_or_create(
            group_id=group_id, defaults={"result": encode_meta(meta),
                                         "expires_at": _db_time(_expires_at(expires))})

    @off_loop
    def get_group(self, group_id: str) -> dict[str, Any] | None:
        row = self._live(self._groups().filter(group_id=group_id)).first()
        return decode_meta(row.result) if row is not None else None

    @off_loop
    def delete_group(self, group_id: str) -> None:
        self._groups(write=True).filter(group_id=group_id).delete()

    # -- chord join ----------------------------------------------------------------------
    @off_loop
    def chord_add(self, group_id: str, index: int, meta: Mapping[str, Any],
                  size: int) -> list[dict[str, Any]] | None:
        """Record member ``index``; return all metas, in order, to the call completing it."""
        from django.db import IntegrityError, transaction
        from django.db.models import F

        check_chord_args(index, size)
        models = self._models()
        alias = self._alias(models.ChordCounter, True)
        fresh(alias)
        parts, counters = models.ChordPart.objects.using(alias), models.ChordCounter.objects.using(
            alias)
        expires_at = _db_time(_expires_at(self.expires))
        with transaction.atomic(using=alias):
            try:
                with transaction.atomic(using=alias):
                    parts.create(group_id=group_id, index=index, meta=encode_meta(meta),
                                 expires_at=expires_at)
            except IntegrityError:
                return None  # recorded before: the first meta wins, counted once
            if not counters.filter(group_id=group_id).update(count=F("count") + 1):
                try:
                    with transaction.atomic(using=alias):
                        counters.create(group_id=group_id, count=1, sub_tasks=str(size),
                                        expires_at=expires_at)
                except IntegrityError:  # a concurrent first member created it
                    counters.filter(group_id=group_id).update(count=F("count") + 1)
            count = counters.filter(group_id=group_id).values_list("count", flat=True).get()
            if count != size:
                return None
            rows = list(parts.filter(group_id=group_id).order_by("index")
                        .values_list("meta", flat=True))
        return [decode_meta(value) or {} for value in rows]

    @off_loop
    def chord_clear(self, group_id: str) -> None:
        models = self._models()
        alias = self._alias(models.ChordCounter, True)
        fresh(alias)
        models.ChordPart.objects.using(alias).filter(group_id=group_id).delete()
        models.ChordCounter.objects.using(alias).filter(group_id=group_id).delete()

    # -- housekeeping -------------------------------------------------------------------
    @off_loop
    def cleanup(self) -> int:
        """Delete every result, group and chord row past its expiry; return how many."""
        models = self._models()
        now = _db_time(_utcnow())
        removed = 0
        for model in (models.TaskResult, models.GroupResult, models.ChordPart,
                      models.ChordCounter, models.StoreEntry):
            alias = self._alias(model, True)
            fresh(alias)
            removed += model.objects.using(alias).filter(expires_at__lte=now).delete()[0]
        return removed
