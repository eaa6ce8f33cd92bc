"""``manage.py celeriac_import``: django-celery-beat's and django-celery-results' tables
(their column names, as their migrations create them) copied into celeriac's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest

LEGACY = {
    "django_celery_beat_intervalschedule": "id integer primary key, every integer, "
                                           "period varchar(24)",
    "django_celery_beat_crontabschedule": "id integer primary key, minute varchar(240), "
    "hour varchar(96), day_of_week varchar(64), day_of_month varchar(124), "
    "month_of_year varchar(64), timezone varchar(63)",
    "django_celery_beat_solarschedule": "id integer primary key, event varchar(24), "
                                        "latitude decimal, longitude decimal",
    "django_celery_beat_clockedschedule": "id integer primary key, clocked_time datetime",
    "django_celery_beat_periodictask": "id integer primary key, name varchar(200), "
    "task varchar(200), args text, kwargs text, queue varchar(200), exchange varchar(200), "
    "routing_key varchar(200), expires datetime, enabled bool, last_run_at datetime, "
    "total_run_count integer, date_changed datetime, description text, crontab_id integer, "
    "interval_id integer, solar_id integer, one_off bool, start_time datetime, "
    "priority integer, headers text, clocked_id integer, expire_seconds integer",
    "django_celery_results_taskresult": "id integer primary key, task_id varchar(255), "
    "status varchar(50), content_type varchar(128), content_encoding varchar(64), "
    "result text, date_done datetime, traceback text, meta text, task_args text, "
    "task_kwargs text, task_name varchar(255), worker varchar(100), date_created datetime, "
    "periodic_task_name varchar(255), date_started datetime",
    "django_celery_results_groupresult": "id integer primary key, group_id varchar(255), "
    "date_created datetime, date_done datetime, content_type varchar(128), "
    "content_encoding varchar(64), result text",
}
ROWS = [
    ("django_celery_beat_intervalschedule", (1, 10, "minutes")),
    ("django_celery_beat_crontabschedule", (1, "30", "7", "1", "*", "*", "Europe/Paris")),
    ("django_celery_beat_periodictask", (
        1, "legacy report", "shop.tasks.some_periodic_task", "[1]", '{"a": 2}', "reports",
        None, None, None, 1, "2026-11-01 07:30:00", 12, "2026-10-01 00:00:00", "weekly",
        1, None, None, 0, None, 3, '{"h": "v"}', None, 60)),
    ("django_celery_beat_periodictask", (
        2, "legacy interval", "shop.tasks.other_periodic_task", "[]", "{}", None, None, None,
        None, 0, None, 0, "2026-10-01 00:00:00", "", None, 1, None, 0, None, None, "{}", None,
        None)),
    ("django_celery_results_taskresult", (
        1, "legacy-ok", "SUCCESS", "application/json", "utf-8", '{"total": 3}',
        "2026-11-02 10:00:00", None, '{"children": []}', "[1]", "{}",
        "shop.tasks.email_send", "w1@host", "2026-11-02 09:59:00", None, None)),
    ("django_celery_results_taskresult", (
        2, "legacy-pickle", "SUCCESS", "application/x-python-serialize", "binary", "gAR=",
        "2026-11-02 10:00:00", None, None, None, None, "x", None, "2026-11-02 10:00:00",
        None, None)),
    ("django_celery_results_groupresult", (
        1, "legacy-group", "2026-11-02 10:00:00", "2026-11-02 10:00:00", "application/json",
        "utf-8", '{"result": [["legacy-ok", null]]}')),
]


@pytest.fixture
def legacy(dj: Any) -> Iterator[None]:
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("the legacy schema here is written for SQLite")
    with connection.cursor() as cursor:
        for table, columns in LEGACY.items():
            cursor.execute(f"CREATE TABLE {table} ({columns})")
        for table, row in ROWS:
            marks = ", ".join("%s" for _ in row)
            cursor.execute(f"INSERT INTO {table} VALUES ({marks})", row)
    yield
    with connection.cursor() as cursor:
        for table in LEGACY:
            cursor.execute(f"DROP TABLE {table}")
    from celeriac.contrib.django.beat.models import PeriodicTask
    from celeriac.contrib.django.results.models import GroupResult, TaskResult

    PeriodicTask.objects.filter(name__startswith="legacy").delete()
    TaskResult.objects.filter(task_id__startswith="legacy").delete()
    GroupResult.objects.filter(group_id__startswith="legacy").delete()


def run_import(*args: str) -> str:
    from django.core.management import call_command

    out = StringIO()
    call_command("celeriac_import", *args, stdout=out)
    return out.getvalue()


def test_import_copies_schedules_tasks_and_results(dj: Any, legacy: None) -> None:
    from celeriac.contrib.django.beat.models import PeriodicTask
    from celeriac.contrib.django.beat.store import DjangoScheduleStore

    assert "dry run" in run_import("--dry-run")
    assert not PeriodicTask.objects.filter(name__startswith="legacy").exists()
    report = run_import()
    assert "2 periodic task(s) imported" in report
    assert "1 task result(s) and 1 group result(s) imported, 1 skipped" in report
    task = PeriodicTask.objects.get(name="legacy report")
    assert (task.crontab.minute, task.crontab.timezone) == ("30", "Europe/Paris")
    assert (task.queue, task.priority, task.expire_seconds) == ("reports", 3, 60)
    assert task.total_run_count == 12 and task.last_run_at.isoformat().startswith("2026-11-01")
    interval = PeriodicTask.objects.get(name="legacy interval")
    assert str(interval.interval) == "every 10 minutes" and not interval.enabled
    entry = DjangoScheduleStore().get_entry("legacy report")
    assert entry is not None and entry.spec.args == (1,) and dict(entry.spec.kwargs) == {"a": 2}
    assert entry.spec.options["headers"] == {"h": "v"}
    # no missed run is replayed: the cursor starts at the import
    assert entry.cursor() > entry.last_run_at  # type: ignore[operator]
    result = dj.app.AsyncResult("legacy-ok")
    assert (result.state, result.result) == ("SUCCESS", {"total": 3})
    assert dj.app.backend.get_group("legacy-group") == {"result": [["legacy-ok", None]]}
    again = run_import()
    assert "0 periodic task(s) imported, 2 kept" in again
    assert json.loads(PeriodicTask.objects.get(name="legacy report").kwargs) == {"a": 2}
