"""``python manage.py celeriac_import``: copy django-celery-beat and django-celery-results data.

Reads the tables those packages created (``django_celery_beat_*``,
``django_celery_results_*``) with plain SQL, so the packages need not be
installed any more, and writes celeriac's tables:

* schedules and periodic tasks (by name; an existing task of the same name is
  kept unless ``--replace``), with ``last_run_at`` and ``total_run_count``;
  the run cursor starts now, so no missed run is replayed at the switch;
* task and group results (by id; existing rows are kept), in batches.
  Results stored with another serializer than JSON (pickle) are skipped and
  counted. Chord counters of chords still running are not copied.

``--dry-run`` only counts. Run it after ``migrate``; it can be run again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connections, transaction

from celeriac.contrib.django.db import aware

BEAT = "django_celery_beat_"
RESULTS = "django_celery_results_"
CHUNK = 1000


def _rows(cursor: Any, table: str) -> Iterator[dict[str, Any]]:
    cursor.execute(f"SELECT * FROM {table}")
    names = [c[0] for c in cursor.description]
    while True:
        batch = cursor.fetchmany(CHUNK)
        if not batch:
            return
        for row in batch:
            yield dict(zip(names, row, strict=True))


def _aware(value: Any) -> Any:
    """A datetime read with plain SQL, as this project's fields want it (aware with
    ``USE_TZ``, where the database holds UTC; naive local time otherwise)."""
    from django.conf import settings
    from django.utils import timezone as dj

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        return value
    if settings.USE_TZ:
        return value if dj.is_aware(value) else value.replace(tzinfo=timezone.utc)
    return dj.make_naive(value, dj.get_default_timezone()) if dj.is_aware(value) else value


class Command(BaseCommand):
    help = "Import django-celery-beat and django-celery-results tables into celeriac's."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--database", default="default")
        parser.add_argument("--beat-only", action="store_true")
        parser.add_argument("--results-only", action="store_true")
        parser.add_argument("--replace", action="store_true",
                            help="Overwrite periodic tasks that exist under the same name.")
        parser.add_argument("--dry-run", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        alias = options["database"]
        tables = set(connections[alias].introspection.table_names())
        if not any(t.startswith((BEAT, RESULTS)) for t in tables):
            raise CommandError("no django_celery_beat_* or django_celery_results_* tables in "
                               f"database {alias!r}")
        self.alias, self.tables, self.dry = alias, tables, options["dry_run"]
        with transaction.atomic(using=alias):
            if not options["results_only"]:
                self.import_beat(options["replace"])
            if not options["beat_only"]:
                self.import_results()
            if self.dry:
                transaction.set_rollback(True, using=alias)
        if self.dry:
            self.stdout.write("dry run: nothing was written")

    # -- django-celery-beat ----------------------------------------------------------------
    def _table(self, name: str) -> list[dict[str, Any]]:
        table = BEAT + name
        if table not in self.tables:
            return []
        with connections[self.alias].cursor() as cursor:
            return list(_rows(cursor, table))

    def import_beat(self, replace: bool) -> None:
        from celeriac.contrib.django.beat import models as m
        from celeriac.contrib.django.beat.models import now_us
        from celeriac.contrib.django.beat.periodic_task import _us

        db = self.alias
        maps: dict[str, dict[Any, Any]] = {"interval": {}, "crontab": {}, "solar": {},
                                           "clocked": {}}
        for row in self._table("intervalschedule"):
            maps["interval"][row["id"]] = m.IntervalSchedule.objects.using(db).get_or_create(
                every=row["every"], period=row["period"])[0]
        for row in self._table("crontabschedule"):
            spec = {k: row[k] for k in ("minute", "hour", "day_of_week", "day_of_month",
                                        "month_of_year")}
            spec["timezone"] = str(row.get("timezone") or "UTC")
            maps["crontab"][row["id"]] = m.CrontabSchedule.objects.using(db).get_or_create(
                **spec)[0]
        for row in self._table("solarschedule"):
            maps["solar"][row["id"]] = m.SolarSchedule.objects.using(db).get_or_create(
                event=row["event"], latitude=row["latitude"], longitude=row["longitude"])[0]
        for row in self._table("clockedschedule"):
            maps["clocked"][row["id"]] = m.ClockedSchedule.objects.using(db).get_or_create(
                clocked_time=_aware(row["clocked_time"]))[0]
        created = kept = 0
        for row in self._table("periodictask"):
            name = row["name"]
            existing = m.PeriodicTask.objects.using(db).filter(name=name).first()
            if existing is not None and not replace:
                kept += 1
                continue
            task = existing or m.PeriodicTask(name=name)
            for field in ("task", "args", "kwargs", "queue", "exchange", "routing_key",
                          "priority", "expire_seconds", "one_off", "enabled", "description"):
                if field in row:
                    setattr(task, field, row[field])
            task.headers = row.get("headers") or "{}"
            task.expires = _aware(row.get("expires"))
            task.start_time = _aware(row.get("start_time"))
            for kind, mapping in maps.items():
                setattr(task, kind, mapping.get(row.get(f"{kind}_id")))
            task.save(using=db)
            last = _aware(row.get("last_run_at"))
            m.PeriodicTask.objects.using(db).filter(pk=task.pk).update(
                last_run_at=last, last_run_us=_us(aware(last)), total_run_count=row.get(
                    "total_run_count") or 0, anchor_us=now_us())
            created += 1
        self.stdout.write(f"beat: {created} periodic task(s) imported, {kept} kept as they "
                          f"were, {sum(len(v) for v in maps.values())} schedule(s)")

    # -- django-celery-results ---------------------------------------------------------------
    def import_results(self) -> None:
        from celeriac.contrib.django.results.models import GroupResult, TaskResult

        copied = skipped = 0
        batch: list[Any] = []
        table = RESULTS + "taskresult"
        if table in self.tables:
            with connections[self.alias].cursor() as cursor:
                for row in _rows(cursor, table):
                    if (row.get("content_type") or "application/json") != "application/json":
                        skipped += 1
                        continue
                    batch.append(self._task_result(TaskResult, row))
                    if len(batch) >= CHUNK:
                        copied += self._flush(TaskResult, batch)
            copied += self._flush(TaskResult, batch)
        groups = 0
        table = RESULTS + "groupresult"
        if table in self.tables:
            with connections[self.alias].cursor() as cursor:
                rows = [GroupResult(group_id=r["group_id"], result=r["result"],
                                    content_type=r.get("content_type") or "application/json",
                                    content_encoding=r.get("content_encoding") or "utf-8")
                        for r in _rows(cursor, table)]
            groups = self._flush(GroupResult, rows)
        self.stdout.write(f"results: {copied} task result(s) and {groups} group result(s) "
                          f"imported, {skipped} skipped (not JSON)")

    def _task_result(self, model: Any, row: dict[str, Any]) -> Any:
        meta = json.loads(row["meta"]) if row.get("meta") else {}
        meta = meta if isinstance(meta, dict) else {}
        done = _aware(row.get("date_done"))
        meta.setdefault("date_done", done.isoformat() if done and row.get("status") in (
            "SUCCESS", "FAILURE", "REVOKED") else None)
        meta.setdefault("children", [])
        if row.get("task_name"):
            meta.setdefault("name", row["task_name"])
        if row.get("worker"):
            meta.setdefault("worker", row["worker"])
        return model(task_id=row["task_id"], status=row["status"], result=row.get("result"),
                     traceback=row.get("traceback"), meta=json.dumps(meta),
                     task_name=row.get("task_name"), task_args=row.get("task_args"),
                     task_kwargs=row.get("task_kwargs"), worker=row.get("worker"),
                     periodic_task_name=row.get("periodic_task_name"), date_done=done,
                     date_started=_aware(row.get("date_started")),
                     content_encoding=row.get("content_encoding") or "utf-8")

    def _flush(self, model: Any, batch: list[Any]) -> int:
        if not batch:
            return 0
        count = len(batch)
        model.objects.using(self.alias).bulk_create(batch, ignore_conflicts=True)
        batch.clear()
        return count
