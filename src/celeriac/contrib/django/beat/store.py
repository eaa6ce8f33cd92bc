"""The schedule store on Django's tables: ``beat_schedule_store = 'django://'``.

Implements :class:`celeriac.schedules.store.ScheduleStore` over ``PeriodicTask``
(entries), ``ScheduleFire`` (fire claims) and ``SchedulerLease`` (the leader
lease), on the database alias named in the URL (``django://`` = ``default``).

* An entry is a ``PeriodicTask`` row read the way django-celery-beat reads it:
  its schedule row, JSON args/kwargs, ``queue``/``exchange``/``routing_key``/
  ``priority``/``headers`` and ``expires`` or ``expire_seconds`` as publish
  options. A task past ``expires``, or a ``one_off`` task that ran, is disabled.
* A **claim** is one transaction whose first statement is the conditional
  ``UPDATE`` of the task's cursor (enabled, same ``version``, fire time after
  the cursor, not expired, a one-off not run yet), then the ``INSERT`` of the
  fire row, unique per task and fire time. Either both happen or neither, so
  any number of beats fire each time once. A one-off task is disabled by the
  claim of its fire.
* ``generation()`` changes when ``PeriodicTasks.last_update`` changes (every
  save or delete of a task or schedule, as django-celery-beat) or when the
  number, versions or modification times of tasks change, so beats pick up
  admin edits within one tick.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Case, Count, F, Max, Q, Sum, Value, When

from celeriac.schedules import crontab, schedule, solar
from celeriac.schedules.entries import EntrySpec, StoredEntry
from celeriac.schedules.store import CLAIMED, SENT, FireRecord, ScheduleStore, from_us, to_us

from ..db import aware, db_time, fresh
from ..fixup import django_setup
from .schedules import clocked

logger = logging.getLogger("celeriac.beat")
COLUMN_OPTIONS = ("queue", "exchange", "routing_key", "priority")


def _loads(text: str | None, default: Any) -> Any:
    return json.loads(text) if text else default


class DjangoScheduleStore(ScheduleStore):
    """Schedule store in Django's database (django-celery-beat's tables)."""

    def __init__(self, url: str = "django://", *, app: Any = None) -> None:
        self.url = url
        self.alias = url.split("://", 1)[1].strip("/") if "://" in url else ""
        self.alias = self.alias or "default"
        self._app = app

    # -- helpers -----------------------------------------------------------------------
    @property
    def m(self) -> Any:
        django_setup()  # a CLI process (celeriac schedule ...) may not have set Django up
        from . import models

        return models

    def _tasks(self) -> Any:
        fresh(self.alias)
        return self.m.PeriodicTask.objects.using(self.alias)

    def _fires(self) -> Any:
        fresh(self.alias)
        return self.m.ScheduleFire.objects.using(self.alias)

    def _touch(self) -> None:
        self.m.PeriodicTasks.update_changed(using=self.alias)

    @staticmethod
    def _now() -> datetime:
        return datetime.now(timezone.utc)

    # -- rows <-> entries -------------------------------------------------------------
    def _entry(self, row: Any) -> StoredEntry | None:
        try:
            sched = row.schedule
            options = dict(_loads(row.options, {}))
            for name in COLUMN_OPTIONS:
                if getattr(row, name) is not None:
                    options[name] = getattr(row, name)
            if row.expire_seconds is not None:
                options["expires"] = float(row.expire_seconds)
            elif row.expires is not None:
                options["expires"] = aware(row.expires).isoformat()
            headers = dict(_loads(row.headers, {}))
            if headers:
                options["headers"] = headers
            spec = EntrySpec(name=row.name, task=row.task, schedule=sched,
                             args=tuple(_loads(row.args, [])), kwargs=dict(_loads(row.kwargs, {})),
                             options=options, missed=row.missed or "latest",
                             max_lateness=row.max_lateness)
        except Exception as exc:  # a bad row must not stop the other entries
            logger.error("beat: periodic task %r is invalid and is not scheduled: %s",
                         getattr(row, "name", "?"), exc)
            return None
        expires = aware(row.expires)
        enabled = (row.enabled and not (expires is not None and expires <= self._now())
                   and not (row.one_off and row.last_run_us is not None))
        anchor = row.anchor_us if row.anchor_us is not None else to_us(aware(row.date_changed))
        return StoredEntry(spec=spec, enabled=enabled, version=row.version,
                           anchor=from_us(anchor),
                           last_run_at=from_us(row.last_run_us) if row.last_run_us else None,
                           total_run_count=row.total_run_count,
                           dropped_through=from_us(row.dropped_us) if row.dropped_us else None,
                           source=row.source or "runtime", code_hash=row.code_hash)

    def _schedule_row(self, sched: Any) -> tuple[str, Any]:
        m = self.m
        kinds = ((clocked, m.ClockedSchedule, "clocked"), (solar, m.SolarSchedule, "solar"),
                 (crontab, m.CrontabSchedule, "crontab"), (schedule, m.IntervalSchedule,
                                                           "interval"))
        for kind, model, field in kinds:
            if isinstance(sched, kind):
                row = model.from_schedule(sched)
                if row.pk is None:
                    row.save(using=self.alias)
                return field, row
        raise ValueError(f"beat: cannot store schedule {sched!r} in the database")

    def _values(self, entry: StoredEntry) -> dict[str, Any]:
        spec = entry.spec
        options = dict(spec.options)
        values: dict[str, Any] = {name: options.pop(name, None) for name in COLUMN_OPTIONS}
        headers = dict(options.pop("headers", None) or {})
        expires = options.pop("expires", None)
        values["expire_seconds"] = int(expires) if isinstance(expires, (int, float)) else None
        values["expires"] = (db_time(datetime.fromisoformat(expires))
                             if isinstance(expires, str) else
                             db_time(expires) if isinstance(expires, datetime) else None)
        field, sched_row = self._schedule_row(spec.schedule)
        values.update({f: None for f in ("interval", "crontab", "solar", "clocked")})
        values[field] = sched_row
        values.update(
            task=spec.task, args=json.dumps(list(spec.args)),
            kwargs=json.dumps(dict(spec.kwargs)), headers=json.dumps(headers),
            options=json.dumps(options, default=str), missed=spec.missed,
            max_lateness=spec.max_lateness, enabled=entry.enabled, version=entry.version,
            anchor_us=to_us(entry.anchor), source=entry.source, code_hash=entry.code_hash)
        if field == "clocked":
            values["one_off"] = True  # django-celery-beat's rule; never cleared by an edit here
        return values

    # -- entries ---------------------------------------------------------------------
    def _rows(self) -> Any:
        return self._tasks().select_related("interval", "crontab", "solar", "clocked")

    def list_entries(self) -> list[StoredEntry]:
        entries = (self._entry(row) for row in self._rows().order_by("name"))
        return [e for e in entries if e is not None]

    def get_entry(self, name: str) -> StoredEntry | None:
        row = self._rows().filter(name=name).first()
        return self._entry(row) if row is not None else None

    def generation(self) -> int:
        agg = self._tasks().aggregate(n=Count("id"), v=Sum("version"), c=Max("date_changed"))
        last = self.m.PeriodicTasks.objects.using(self.alias).filter(ident=1).values_list(
            "last_update", flat=True).first()
        text = repr((agg["n"], agg["v"], agg["c"], last)).encode()
        return int.from_bytes(hashlib.sha1(text).digest()[:7], "big")

    def put_entry(self, entry: StoredEntry, expected_version: int | None) -> bool:
        with transaction.atomic(using=self.alias):
            self._touch()  # write first: no read-then-write lock upgrade on SQLite
            values = self._values(entry)
            if expected_version is None:
                try:
                    with transaction.atomic(using=self.alias):
                        self._tasks().bulk_create([self.m.PeriodicTask(name=entry.name,
                                                                       **values)])
                except IntegrityError:
                    transaction.set_rollback(True, using=self.alias)  # and the schedule row
                    return False
            elif not self._tasks().filter(name=entry.name, version=expected_version).update(
                    **values):
                transaction.set_rollback(True, using=self.alias)
                return False
        return True

    def delete_entry(self, name: str) -> bool:
        with transaction.atomic(using=self.alias):
            deleted, _ = self._tasks().filter(name=name).delete()
            if deleted:
                self._touch()
        return bool(deleted)

    # -- fires -----------------------------------------------------------------------
    @staticmethod
    def _after_cursor(instant_us: int) -> Q:
        return (Q(anchor_us__lt=instant_us)
                & (Q(last_run_us__isnull=True) | Q(last_run_us__lt=instant_us))
                & (Q(dropped_us__isnull=True) | Q(dropped_us__lt=instant_us)))

    def claim_fire(self, record: FireRecord, version: int) -> bool:
        fire_us = to_us(record.fire_time)
        with transaction.atomic(using=self.alias):
            tasks = self._tasks().filter(name=record.entry)
            if record.manual:
                claimed = tasks.update(total_run_count=F("total_run_count") + 1)
            else:
                now = db_time(record.claimed_at)
                claimed = tasks.filter(
                    self._after_cursor(fire_us), Q(expires__isnull=True) | Q(expires__gt=now),
                    Q(one_off=False) | Q(last_run_us__isnull=True), enabled=True,
                    version=version,
                ).update(last_run_us=fire_us, last_run_at=db_time(record.fire_time),
                         total_run_count=F("total_run_count") + 1,
                         enabled=Case(When(one_off=True, then=Value(False)),
                                      default=F("enabled")))
            if claimed != 1:
                return False
            try:
                with transaction.atomic(using=self.alias):
                    self.m.ScheduleFire.objects.using(self.alias).create(
                        entry=record.entry, fire_us=fire_us, task_id=record.task_id,
                        payload=json.dumps(record.payload), owner=record.owner,
                        claimed_us=to_us(record.claimed_at), state=record.state,
                        manual=record.manual)
            except IntegrityError:
                transaction.set_rollback(True, using=self.alias)
                return False
            if not record.manual and tasks.filter(one_off=True).exists():
                self._touch()  # the one-off task is disabled now: running beats reload
        return True

    def drop_through(self, name: str, version: int, instant: datetime) -> bool:
        at = to_us(instant)
        return bool(self._tasks().filter(self._after_cursor(at), name=name, version=version)
                    .update(dropped_us=at))

    def mark_sent(self, entry: str, fire_time: datetime, sent_at: datetime) -> None:
        self._fires().filter(entry=entry, fire_us=to_us(fire_time)).update(
            state=SENT, sent_us=to_us(sent_at))

    @staticmethod
    def _record(row: Any) -> FireRecord:
        return FireRecord(entry=row.entry, fire_time=from_us(row.fire_us), task_id=row.task_id,
                          payload=json.loads(row.payload), owner=row.owner,
                          claimed_at=from_us(row.claimed_us), state=row.state,
                          sent_at=from_us(row.sent_us) if row.sent_us is not None else None,
                          manual=row.manual)

    def stale_claims(self, claimed_before: datetime) -> list[FireRecord]:
        rows = self._fires().filter(state=CLAIMED, claimed_us__lt=to_us(claimed_before))
        return [self._record(r) for r in rows.order_by("fire_us")]

    def take_over(self, record: FireRecord, owner: str, now: datetime,
                  claimed_before: datetime) -> bool:
        return self._fires().filter(
            entry=record.entry, fire_us=to_us(record.fire_time), state=CLAIMED,
            claimed_us=to_us(record.claimed_at), claimed_us__lt=to_us(claimed_before),
        ).update(owner=owner, claimed_us=to_us(now)) == 1

    def list_fires(self, entry: str | None = None) -> list[FireRecord]:
        rows = self._fires()
        if entry is not None:
            rows = rows.filter(entry=entry)
        return [self._record(r) for r in rows.order_by("fire_us", "entry")]

    def prune_fires(self, before: datetime) -> int:
        return int(self._fires().filter(state=SENT, fire_us__lt=to_us(before)).delete()[0])

    # -- leader lease ----------------------------------------------------------------
    def acquire_lease(self, owner: str, now: datetime, ttl: float) -> bool:
        now_us = to_us(now)
        until = now_us + int(ttl * 1_000_000)
        leases = self.m.SchedulerLease.objects.using(self.alias)
        fresh(self.alias)
        with transaction.atomic(using=self.alias):
            if leases.filter(Q(owner=owner) | Q(expires_us__lte=now_us), key="lease").update(
                    owner=owner, expires_us=until):
                return True
            if leases.filter(key="lease").exists():
                return False
            try:
                with transaction.atomic(using=self.alias):
                    leases.create(key="lease", owner=owner, expires_us=until)
            except IntegrityError:
                return False
        return True

    def release_lease(self, owner: str) -> None:
        fresh(self.alias)
        self.m.SchedulerLease.objects.using(self.alias).filter(key="lease", owner=owner).delete()

    def lease_holder(self, now: datetime) -> str | None:
        fresh(self.alias)
        row = self.m.SchedulerLease.objects.using(self.alias).filter(
            key="lease", expires_us__gt=to_us(now)).values_list("owner", flat=True).first()
        return str(row) if row is not None else None

    def close(self) -> None:
        from django.db import connections

        conn = connections[self.alias]
        if not conn.in_atomic_block:
            conn.close()

    def close_thread(self) -> None:
        """Django's connections are per thread: close this thread's one."""
        self.close()


def with_task_name(entry: StoredEntry) -> StoredEntry:
    """``entry`` whose messages carry django-celery-beat's ``periodic_task_name`` header."""
    options = dict(entry.spec.options)
    options["headers"] = {**dict(options.get("headers") or {}), "periodic_task_name": entry.name}
    return replace(entry, spec=replace(entry.spec, options=options))


def store_for_url(url: str, *, app: Any = None, options: Mapping[str, Any] | None = None,
                  prefix: str = "") -> DjangoScheduleStore:
    """The store on the database alias of ``url`` (the scheme table's ``django://`` row)."""
    return DjangoScheduleStore(url, app=app)
