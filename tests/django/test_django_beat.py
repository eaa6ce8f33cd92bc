"""Schedules in the database: the HackSoft seed's ``setup_periodic_tasks`` command, then
three beats with the ``DatabaseScheduler`` (each fire sent and run once), the old
django-celery-beat scheduler path, and the schedule store contract on Django's tables."""

from __future__ import annotations

import collections
import importlib.util
import re
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
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
    assert_grid([fire_us for fire_us, _, _ in sent], beats)
    assert sum("took the leader lease" in b.log for b in beats) >= 1
    [(count,)] = site.query("SELECT total_run_count FROM celeriac_beat_periodictask "
                            "WHERE name = %s", ("every second",))
    assert count == len(sent)


SKIP_LINE = re.compile(r"beat: 'every second': missed fires not sent \(.*?\): (.*)$", re.M)
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?\+00:00")


def assert_grid(times: list[int], beats: list[Proc]) -> None:
    """Fires on the one-second grid; a second without a fire was skipped with a warning
    (a beat that falls behind on a loaded machine skips missed fires, and says so)."""
    named = {datetime.fromisoformat(stamp) for beat in beats
             for line in SKIP_LINE.findall(beat.log) for stamp in STAMP.findall(line)}
    for a, b in pairwise(times):
        assert (b - a) % 1_000_000 == 0, (a, b)
        for missing in range(a + 1_000_000, b, 1_000_000):
            assert datetime.fromtimestamp(missing / 1e6, timezone.utc) in named, \
                f"no fire at {missing} and no warning; logs:\n" + "\n".join(
                    beat.log[-3000:] for beat in beats)


def test_leader_killed_a_standby_keeps_firing(site: Site) -> None:
    """kill -9 of the leading DatabaseScheduler: another beat sends the next fires within
    about a second (not after the 10 s lease); every fire runs once or is named skipped."""
    assert site.manage("setup_periodic_tasks").returncode == 0
    worker = site.worker("-P", "threads", "-c", "4")
    beats = [start_beat(site, name=f"beat{i}") for i in range(3)]
    wait_until(lambda: len(fires(site)) >= 4, 60, interval=0.2, what="four fires")
    owner = wait_until(lambda: site.query("SELECT owner FROM celeriac_beat_schedulerlease "
                                          "WHERE key = 'lease'"), 30, what="a lease holder")
    pid = int(owner[0][0].rsplit(":", 2)[-2])
    [leader] = [b for b in beats if b.popen.pid == pid]
    killed_at = time.time()
    leader.kill()  # SIGKILL: its lease stays held for up to 10 s
    wait_until(lambda: fires(site) and fires(site)[-1][0] / 1e6 > killed_at + 12, 60,
               interval=0.2, what="fires after the lease lapsed")
    # killed between claiming a fire and marking it sent (a wider window on a loaded
    # machine), the leader leaves a claim that a standby re-sends after watching it for
    # beat_claim_timeout (30 s): the standbys keep running until then
    wait_until(lambda: not site.query(
        "SELECT 1 FROM celeriac_beat_schedulefire WHERE state = 'claimed' AND fire_us <= %s",
        (int(killed_at * 1e6),)), 120, interval=0.2, what="the dead leader's claim re-sent")
    for beat in beats:
        assert beat is leader or beat.stop() == 0
    sent = site.query("SELECT fire_us, task_id, state, COALESCE(sent_us, claimed_us) FROM "
                      "celeriac_beat_schedulefire WHERE entry = %s ORDER BY fire_us",
                      ("every second",))
    wait_until(lambda: len(ticks(site)) >= len(sent), 30, what="the last fires to run")
    worker.stop()
    ran = ticks(site)
    assert len(set(ran)) == len(sent), "every fire ran"
    # a fire the leader published and was killed before marking sent is sent again by the
    # standby that re-sends its claim (at-least-once): that one fire may run twice
    fire_of = {task_id: fire_us for fire_us, task_id, _, _ in sent}
    twice = [t for t, n in collections.Counter(ran).items() if n > 1]
    assert len(twice) <= 1 and all(fire_of[t] <= killed_at * 1e6 for t in twice), (
        "only the dead leader's last claim may run twice")
    assert all(state == "sent" for _, _, state, _ in sent)
    assert_grid([fire_us for fire_us, _, _, _ in sent], beats)
    send_times = sorted(at / 1e6 for _, _, _, at in sent)
    assert max(b - a for a, b in pairwise(send_times)) < 5, "silent for about the lease"
    assert sum("taking over from the leader" in b.log for b in beats) >= 1


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
_failover = _load("test_beat_failover")
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


def test_leader_dies_a_standby_takes_over_on_django_tables(store: ScheduleStore) -> None:
    """The failover simulation of the unit suite, with three schedulers on Django's tables."""
    _failover.check_failover(_failover.simulate_failover(lambda: store))


def test_store_writes_wait_for_another_writer_on_sqlite(store: ScheduleStore) -> None:
    """Another process writing to the SQLite file while a beat records an entry: the
    beat waits for it. A transaction that read first and then wrote would be refused at
    once with "database is locked" (SQLite cannot upgrade its stale read to a write)."""
    import sqlite3
    import threading

    from django.db import connections

    from celeriac.contrib.django.beat import models
    from celeriac.schedules import schedule
    from celeriac.schedules.entries import EntrySpec, StoredEntry

    settings = connections["default"].settings_dict
    if settings["ENGINE"] != "django.db.backends.sqlite3":
        pytest.skip("the in-process database is not SQLite")
    models.PeriodicTasks.update_changed()  # the row exists: the next touch is an update
    other = sqlite3.connect(settings["NAME"], timeout=30, isolation_level=None,
                            check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")  # holds the write lock for a moment
        threading.Timer(0.5, lambda: other.execute("COMMIT")).start()
        spec = EntrySpec(name="waits", task="t.waits", schedule=schedule(5))
        now = datetime.now(timezone.utc)
        assert store.put_entry(StoredEntry(spec=spec, anchor=now), None)
        assert store.get_entry("waits") is not None
        models.PeriodicTasks.update_changed()
    finally:
        time.sleep(0.6)
        other.close()
