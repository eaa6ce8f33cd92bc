"""The periodic task admin against a running beat: an edit made in the admin (Django's test
client, in this process) is picked up by a beat process on the same database within a
tick; enable/disable, run now, next run and crontabs in words."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from djangosite import PROJECT, base_env, wait_until

ADMIN = "/admin/celeriac_beat/periodictask/"


@pytest.fixture
def client(dj: Any) -> Iterator[Any]:
    from django.contrib.auth.models import User
    from django.test import Client

    user = User.objects.create_superuser(f"beat-{uuid.uuid4().hex[:8]}", "b@example.com", "x")
    browser = Client()
    browser.force_login(user)
    yield browser
    user.delete()


@pytest.fixture
def beat(dj: Any, tmp_path: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A DatabaseScheduler beat process on this process's database."""
    from django.conf import settings

    log = open(tmp_path / "beat.log", "wb")  # noqa: SIM115 - closed below
    env = base_env(CELERIAC_TEST_DATABASE=str(settings.DATABASES["default"]["NAME"]),
                   CELERIAC_BROKER_URL=f"sqlite:///{tmp_path / 'beat-broker.sqlite3'}")
    proc = subprocess.Popen([sys.executable, "-m", "celeriac", "-A", "proj", "beat",
                             "--scheduler",
                             "celeriac.contrib.django.beat.schedulers:DatabaseScheduler",
                             "-l", "INFO"], cwd=PROJECT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    wait_until(lambda: "took the leader lease" in (tmp_path / "beat.log").read_text(), 60,
               what="the beat to lead")
    yield proc
    proc.terminate()
    proc.wait(30)
    log.close()


def fire_count(name: str) -> int:
    from celeriac.contrib.django.beat.models import ScheduleFire

    return ScheduleFire.objects.filter(entry=name, manual=False).count()


def test_admin_edits_reach_a_running_beat(client: Any, beat: Any) -> None:
    from celeriac.contrib.django.beat.models import IntervalSchedule, PeriodicTask

    every_second = IntervalSchedule.objects.create(every=1, period="seconds")
    hourly = IntervalSchedule.objects.create(every=1, period="hours")
    name = f"admin-edit-{uuid.uuid4().hex[:6]}"
    task = PeriodicTask.objects.create(name=name, task="shop.tasks.other_periodic_task",
                                       interval=every_second, enabled=False)
    try:
        # enable it with the admin action: the beat starts firing within a tick
        page = client.post(ADMIN, {"action": "enable_tasks", "_selected_action": [task.pk]},
                           follow=True)
        assert page.status_code == 200
        wait_until(lambda: fire_count(name) >= 2, 30, interval=0.2, what="fires after enable")
        # change its schedule in the change form: every hour, so no more fires now
        form = client.get(f"{ADMIN}{task.pk}/change/")
        assert form.status_code == 200
        data = {"name": name, "task": "shop.tasks.other_periodic_task", "enabled": "on",
                "interval": hourly.pk, "args": "[]", "kwargs": "{}", "headers": "{}",
                "options": "{}", "missed": "latest", "description": "edited in the admin",
                "_save": "Save"}
        saved = client.post(f"{ADMIN}{task.pk}/change/", data, follow=True)
        assert saved.status_code == 200, saved.content[:2000]
        task.refresh_from_db()
        assert task.interval_id == hourly.pk and task.description == "edited in the admin"
        settled = fire_count(name)
        import time

        time.sleep(2.5)  # five beat ticks
        assert fire_count(name) <= settled + 1  # at most one fire already claimed
        listing = client.get(ADMIN).content.decode()
        assert name in listing and "every hour" in listing
    finally:
        task.delete()
        every_second.delete()
        hourly.delete()


def test_run_now_next_run_and_crontab_in_words(dj: Any, client: Any) -> None:
    from celeriac.contrib.django.beat.models import CrontabSchedule, PeriodicTask, ScheduleFire

    cron = CrontabSchedule.objects.create(minute="30", hour="7", day_of_week="1",
                                          timezone="Europe/Paris")
    name = f"run-now-{uuid.uuid4().hex[:6]}"
    task = PeriodicTask.objects.create(name=name, task="shop.tasks.some_periodic_task",
                                       crontab=cron)
    try:
        words = client.get("/admin/celeriac_beat/crontabschedule/").content.decode()
        assert "At 07:30, only on Monday Europe/Paris" in words
        listing = client.get(ADMIN).content.decode()
        assert name in listing
        from celeriac.contrib.django.beat.admin import next_run

        following = next_run(task)
        assert following is not None and following.weekday() == 0  # a Monday
        app = dj.app
        app.broker.purge(app.conf.task_default_queue)
        page = client.post(ADMIN, {"action": "run_tasks", "_selected_action": [task.pk]},
                           follow=True)
        assert "Sent: " + name in page.content.decode()
        [got] = app.broker.receive([app.conf.task_default_queue], owner="t", limit=5,
                                   timeout=1)
        app.broker.ack([got])
        assert got.message.task_name == "shop.tasks.some_periodic_task"
        assert got.message.headers["periodic_task_name"] == name
        assert ScheduleFire.objects.filter(entry=name, manual=True).count() == 1
        task.refresh_from_db()
        assert task.total_run_count == 1 and task.last_run_at is None
        # disable / toggle actions
        client.post(ADMIN, {"action": "disable_tasks", "_selected_action": [task.pk]})
        task.refresh_from_db()
        assert not task.enabled and next_run(task) is None
        client.post(ADMIN, {"action": "toggle_tasks", "_selected_action": [task.pk]})
        task.refresh_from_db()
        assert task.enabled
    finally:
        task.delete()
        cron.delete()
