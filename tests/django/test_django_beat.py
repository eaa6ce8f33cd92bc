"""Schedules in the database: the HackSoft seed's ``setup_periodic_tasks`` command, then
three beats with the ``DatabaseScheduler`` (each fire sent and run once), the old
django-celery-beat scheduler path, and the schedule store contract on Django's tables."""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from djangosite import Proc, Site, wait_until

from celeriac.schedules.store import ScheduleStore

SCHEDULER = "celeriac.contrib.django.beat.schedulers:DatabaseScheduler"
UNIT = Path(__file__).resolve().parents[1] / "unit"


def start_beat(site: Site, scheduler: str = SCHEDULER, name: str = "beat") -> Proc:
    beat = site.proc("-m", "celeriac", "-A", "proj", "beat", "--scheduler", scheduler,
                     "-l", "INFO", name=name)
    beat.wait_for("is starting")
    return beat


def ticks(site: Site, task: str = "other_periodic_task") -> list[str]:
    return [r[0] for r in site.query("SELECT task_id FROM shop_tick WHERE task = %s", (task,))]


def fires(site: Site, entry: str = "every second") -> list[tuple[int, str, str]]:
    return site.query("SELECT fire_us, task_id, state FROM celeriac_beat_schedulefire "
                      "WHERE entry = %s ORDER BY fire_us", (entry,))


def test_setup_periodic_tasks_then_three_beats_fire_each_time_once(site: Site) -> None:
    done = site.manage("setup_periodic_tasks")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Setting up shop.tasks.some_periodic_task" in done.stdout
    [(name, enabled)] = site.query("SELECT name, enabled FROM celeriac_beat_periodictask "
                                   "WHERE crontab_id IS NOT NULL")
    assert name == "Do some peridoic stuff" and enabled
    worker = site.worker("-P", "threads", "-c", "4")
    beats = [start_beat(site, name=f"beat{i}") for i in range(3)]
    wait_until(lambda: len(ticks(site)) >= 5, 60, interval=0.2, what="five fires to run")
    for beat in beats:
        assert beat.stop() == 0
    sent = fires(site)
    wait_until(lambda: len(ticks(site)) >= len(sent), 30, what="the last fires to run")
    worker.stop()
    ran = ticks(site)
    assert len(ran) == len(set(ran)) == len(sent)  # every fire ran, none twice
    assert sorted(ran) == sorted(task_id for _, task_id, _ in sent)
    times = [fire_us for fire_us, _, _ in sent]
    assert all(b - a == 1_000_000 for a, b in pairwise(times))
    assert sum("took the leader lease" in b.log for b in beats) >= 1
    [(count,)] = site.query("SELECT total_run_count FROM celeriac_beat_periodictask "
                            "WHERE name = %s", ("every second",))
    assert count == len(sent)


def test_old_django_celery_beat_path_is_accepted(sqlite_site: Site) -> None:
    assert sqlite_site.manage("setup_periodic_tasks").returncode == 0
    beat = start_beat(sqlite_site, "django_celery_beat.schedulers:DatabaseScheduler")
    wait_until(lambda: fires(sqlite_site), 30, what="a fire")
    beat.stop()
    assert "runs celeriac's celeriac.contrib.django.beat.schedulers:DatabaseScheduler" in beat.log


def test_periodic_task_name_reaches_the_result(sqlite_site: Site) -> None:
    assert sqlite_site.manage("setup_periodic_tasks").returncode == 0
    with sqlite_site.running_worker("-P", "solo"):
        beat = start_beat(sqlite_site)
        wait_until(lambda: sqlite_site.query(
            "SELECT 1 FROM celeriac_results_taskresult WHERE periodic_task_name = %s "
            "AND status = 'SUCCESS'", ("every second",)), 60, what="a result of the entry")
        beat.stop()


# -- the schedule store contract on Django's tables ---------------------------------------
def _load(name: str) -> ModuleType:
    module_name = f"_beat_django_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, UNIT / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


_contract = _load("test_beat_store_contract")
for _name in dir(_contract):
    if _name.startswith("test_"):
        globals()[_name] = getattr(_contract, _name)


@pytest.fixture
def store(dj: Any) -> Iterator[ScheduleStore]:
    """A Django store on emptied beat tables of the in-process database."""
    from celeriac.contrib.django.beat import models
    from celeriac.contrib.django.beat.store import DjangoScheduleStore

    def empty() -> None:
        for model in (models.ScheduleFire, models.SchedulerLease, models.PeriodicTask,
                      models.IntervalSchedule, models.CrontabSchedule):
            model.objects.all().delete()

    empty()
    made = DjangoScheduleStore("django://", app=dj.app)
    yield made
    empty()
    time.sleep(0)
