"""A redelivered message whose outcome is already stored is acknowledged, not run again.

A real worker process runs a task, its SUCCESS is stored, and the process dies before
the acknowledgement (``os._exit`` in a ``task_success`` receiver: after the store and
the follow-ups, before the ack). The broker delivers the message again (SQLite: after
its lease lapses; RabbitMQ: at once, the connection closed), and a second worker:

* acknowledges it without running the body when nothing of the run comes after the
  stored outcome (one run in the side-effect file, the INFO line, ``already_done``);
* runs it again when the message has a ``link`` callback (sent after the store, so a
  run that died in between may not have sent it: at least once).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from workerproc import Project, project, read_lines, wait_until

SOURCE = """
import os
from celeriac import Celery
from celeriac.signals import task_success

app = Celery("proj")
app.conf.worker_lease_seconds = 2
HERE = {here!r}

def note(name, task_id):
    with open(os.path.join(HERE, name), "a") as fh:
        fh.write(task_id + "\\n")

@app.task(bind=True)
def once(self, i):
    note("runs.txt", self.request.id)
    return i * 2

@app.task
def callback(value):
    note("callbacks.txt", str(value))

@task_success.connect
def die_after_the_store(sender=None, **kwargs):
    marker = os.path.join(HERE, sender.request.id + ".died")
    if sender.name == "proj.once" and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)  # SUCCESS stored, the message not acknowledged
"""

ALREADY = "acknowledged without running it again"


def run_twice(proj: Project, tmp_path: Path, link: bool) -> tuple[str, Any]:
    client = proj.client()
    with proj.worker(pool="threads", concurrency=1) as first:
        result = (client.once.apply_async((21,), link=client.callback.s()) if link
                  else client.once.delay(21))
        wait_until(lambda: not first.alive(), timeout=60, what=f"the worker to die:\n"
                   f"{first.log}")
    assert (tmp_path / f"{result.id}.died").exists()
    assert result.state == "SUCCESS"  # stored before the process died
    with proj.worker(pool="threads", concurrency=1) as second:
        if link:
            wait_until(lambda: len(read_lines(tmp_path / "runs.txt")) == 2, timeout=60,
                       what=f"the second run:\n{second.log}")
            wait_until(lambda: read_lines(tmp_path / "callbacks.txt"), timeout=60,
                       what=f"the callback:\n{second.log}")
        else:
            second.wait_for_log(ALREADY, timeout=60)
        stats = wait_until(lambda: _stats(proj), timeout=30, what="inspect stats")
        time.sleep(0.5)
        log = second.log
    return log, stats


def _stats(proj: Project) -> Any:
    replies = proj.app.control.inspect(timeout=2.0).stats() or {}
    return next(iter(replies.values()), None)


def check(tmp_path: Path, broker_url: str | None = None,
          backend_url: str | None = None) -> None:
    with project(tmp_path, SOURCE.format(here=str(tmp_path)), broker_url=broker_url,
                 backend_url=backend_url) as proj:
        log, stats = run_twice(proj, tmp_path, link=False)
        runs = read_lines(tmp_path / "runs.txt")
        assert len(runs) == 1, log  # the body ran once
        assert "redelivered, its outcome SUCCESS is already stored" in log, log
        assert stats["prefetch"]["already_done"] == 1, stats
        assert not proj.app.broker.dead_letters()
        assert proj.app.broker.stats("celery").ready == 0


def check_linked(tmp_path: Path, broker_url: str | None = None,
                 backend_url: str | None = None) -> None:
    with project(tmp_path, SOURCE.format(here=str(tmp_path)), broker_url=broker_url,
                 backend_url=backend_url) as proj:
        log, stats = run_twice(proj, tmp_path, link=True)
        assert ALREADY not in log, log
        assert len(read_lines(tmp_path / "runs.txt")) == 2, log  # run again: at least once
        assert "42" in read_lines(tmp_path / "callbacks.txt")
        assert stats["prefetch"]["already_done"] == 0, stats


@pytest.mark.timeout(300)
def test_sqlite_redelivered_success_not_run_again(tmp_path: Path) -> None:
    check(tmp_path)


@pytest.mark.timeout(300)
def test_sqlite_redelivered_with_callback_runs_again(tmp_path: Path) -> None:
    check_linked(tmp_path)


@pytest.mark.timeout(300)
def test_rabbitmq_redelivered_success_not_run_again(tmp_path: Path, rabbitmq_url: str) -> None:
    check(tmp_path, rabbitmq_url, f"sqlite:///{tmp_path / 'results.sqlite3'}")
