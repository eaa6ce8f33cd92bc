"""Acceptance: seed 001's tasks through a real worker and beat started with ``--ini``."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pyramidsite import Site, stop

from celeryproc import wait_until

#: seed 001's command line, with ws-celery replaced by celeriac (``-A`` after the command)
WORKER = ("worker", "-A", "celeriac.contrib.pyramid.celery_app", "--ini", "development.ini",
          "--loglevel=debug")
BEAT = ("beat", "-A", "celeriac.contrib.pyramid.celery_app", "--ini", "development.ini",
        "--loglevel=debug")


@pytest.fixture
def worker(site: Site) -> Any:
    proc = site.start(*WORKER)
    wait_until(lambda: b"ready" in proc.log_path.read_bytes() or proc.poll() is not None, 60.0,
               what="the worker to be ready")
    assert proc.poll() is None, proc.log_path.read_text()
    yield proc
    stop(proc)


def test_worker_runs_seed_tasks_from_views(site: Site, webapp: Any, worker: Any) -> None:
    delivery_id = webapp.post("/order", {"phone": "+358400000003"}).json["delivery_id"]
    (uuid,) = site.rows(f"SELECT uuid FROM delivery WHERE id = {delivery_id}")[0]
    sent = wait_until(lambda: site.rows("SELECT \"to\", body FROM sent_sms"), 60.0, what="the SMS")
    assert sent == [("+358400000003", "Thanks for your order! Review it: "
                     f"https://trees.example.com/review/{uuid.replace('-', '')}")]
    webapp.post("/order-aborted", {"phone": "+358400000004"}, status=409)
    webapp.post("/order", {"phone": "+358400000005"})
    wait_until(lambda: len(site.rows("SELECT id FROM sent_sms")) == 2, 60.0, what="the second SMS")
    assert [r[0] for r in site.rows("SELECT \"to\" FROM sent_sms ORDER BY id")] == [
        "+358400000003", "+358400000005"]  # the aborted order's SMS was never sent
    log = stop(worker)
    assert "INI-LOGGING" in log  # the ini file's [loggers] configured the worker's logging


def test_transactional_task_that_raises_leaves_nothing(site: Site, webapp: Any,
                                                       worker: Any) -> None:
    from celeriac.contrib.pyramid import celery_app

    tasks = celery_app.tasks
    result = tasks["trees.tasks.record_and_fail"].delay("written then failed")
    with pytest.raises(RuntimeError, match="failed after writing"):
        result.get(timeout=60)
    ok = tasks["trees.tasks.record_note"].delay("after")
    ok.get(timeout=60)
    assert site.rows("SELECT text FROM note") == [("after",)]  # no row, no follow-up


def test_transactional_retry_aborts_and_is_sent(site: Site, webapp: Any, worker: Any) -> None:
    from celeriac.contrib.pyramid import celery_app

    assert celery_app.tasks["trees.tasks.retry_once"].delay("r").get(timeout=60) == 1
    assert site.rows("SELECT text FROM note") == [("r (run 2)",)]


def test_request_aware_task_request(site: Site, webapp: Any, worker: Any) -> None:
    from celeriac.contrib.pyramid import celery_app

    info = celery_app.tasks["trees.tasks.describe_request"].delay().get(timeout=60)
    assert info == {"settings": "https://trees.example.com", "path": "/review/x",
                    "url": "https://trees.example.com/review/x", "tm_active": False}


def test_beat_fires_ini_schedule(site: Site, webapp: Any, worker: Any) -> None:
    beat = site.start(*BEAT)
    try:
        wait_until(lambda: len(site.rows("SELECT id FROM conversion_rate")) >= 2, timeout=90,
                   what="two fires of [celerybeat:update_conversion_rates]")
    finally:
        log = stop(beat)
    assert "INI-LOGGING" in log


def test_pshell_helper_counts_and_purges(site: Site, webapp: Any) -> None:
    webapp.post("/order", {"phone": "+358400000006"})
    webapp.post("/order", {"phone": "+358400000007"})
    shell = site.pshell("print('COUNTS', queues()['celery'])\n"
                        "print('PURGED', purge())\n"
                        "print('AFTER', queues()['celery']['ready'])\n")
    assert shell.returncode == 0, shell.stderr
    assert "COUNTS {'ready': 4, 'delayed': 0, 'leased': 0, 'dead': 0}" in shell.stdout
    assert "PURGED 4" in shell.stdout and "AFTER 0" in shell.stdout


def test_worker_purge_drops_waiting_messages(site: Site, webapp: Any) -> None:
    webapp.post("/order", {"phone": "+358400000008"})
    proc = site.start(*WORKER, "--purge")
    try:
        wait_until(lambda: b"ready" in proc.log_path.read_bytes() or proc.poll() is not None, 60.0,
                   what="the worker to be ready")
        time.sleep(1.0)
    finally:
        log = stop(proc)
    assert "Purged 2 messages from 1 known task queue." in log
    assert " received" not in log and site.rows("SELECT id FROM sent_sms") == []


def test_ini_errors_stop_the_command(site: Site) -> None:
    site.ini.write_text(site.ini.read_text().replace(
        "CELERYD_CONCURRENCY = 2", "CELERYD_CONCURRENCY = two"))
    result = site.run(*WORKER)
    assert result.returncode == 1
    assert "[celery] CELERYD_CONCURRENCY = 'two': expected a number" in result.stderr
    missing = site.run("worker", "-A", "celeriac.contrib.pyramid.celery_app")
    assert missing.returncode == 2 and "--ini development.ini" in missing.stderr


#: seed 001's troubleshooting snippets, the import changed
SEED_INSPECT = """\
from celeriac.contrib.pyramid.shell import inspect
i = inspect()
print("COUNT", len(list(i.scheduled().values())[0]))

for celery, data in i.scheduled().items():
    print("Instance {}".format(celery))
    for task in data:
        print("TASK", task["request"]["name"], task["request"]["id"])
    print("Queued: {}".format(i.scheduled()))

print("Active: {}".format(i.active()))
"""


@pytest.mark.parametrize("module", ["celeriac.contrib.pyramid.shell",
                                    "celeriac.task.control"])  # the seed's own path
def test_pshell_inspect_scheduled_and_active(site: Site, webapp: Any, worker: Any,
                                             module: str) -> None:
    from celeriac.contrib.pyramid import celery_app

    later = celery_app.tasks["trees.tasks.plain_note"].apply_async(("later",), countdown=600)
    shell = site.pshell(SEED_INSPECT.replace("celeriac.contrib.pyramid.shell", module))
    assert shell.returncode == 0, shell.stderr
    assert "COUNT 1" in shell.stdout, shell.stdout + shell.stderr
    assert f"TASK trees.tasks.plain_note {later.id}" in shell.stdout
    assert "Instance celery@" in shell.stdout and "Active: {'celery@" in shell.stdout
