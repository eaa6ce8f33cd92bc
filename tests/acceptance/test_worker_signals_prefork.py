"""Signals of the prefork supervisor (issue 9, point 6), in a real worker process:
``worker_before_create_process`` before each child, ``task_revoked(terminated=True)``
when ``revoke(terminate=True)`` kills a running task; and the banner plus the ready
line of a worker started without ``-l``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from workerproc import WorkerProcess, project, read_lines, wait_until

SOURCE = '''
import os, time
from celeriac import Celery, signals

app = Celery("proj")
LOG = os.path.join(os.path.dirname(__file__), "signals.txt")

def note(text):
    with open(LOG, "a") as f:
        f.write(text + "\\n")

@signals.worker_before_create_process.connect
def before_child(sender=None, **kw):
    note("before_create_process")

@signals.task_revoked.connect
def revoked(sender=None, request=None, terminated=None, signum=None, expired=None, **kw):
    note(f"revoked {sender.name} {request.id if request else None} {terminated} {signum}")

@app.task(name="proj.sleepy")
def sleepy():
    note("started")
    time.sleep(60)
'''


def test_prefork_sends_its_signals(tmp_path: Path) -> None:
    with project(tmp_path, SOURCE) as proj:
        log = tmp_path / "signals.txt"
        with proj.worker(pool="prefork", concurrency=1):
            wait_until(lambda: "before_create_process" in read_lines(log), what="a child")
            result = proj.client().sleepy.delay()
            wait_until(lambda: "started" in read_lines(log), what="the task to start")
            result.revoke(terminate=True)
            wait_until(lambda: any(line.startswith("revoked") for line in read_lines(log)),
                       timeout=30, what="task_revoked")
        [line] = [x for x in read_lines(log) if x.startswith("revoked")]
        assert line == f"revoked proj.sleepy {result.id} True 15"


def test_a_worker_without_dash_l_prints_banner_and_ready(tmp_path: Path) -> None:
    with project(tmp_path, SOURCE) as proj:
        worker = WorkerProcess(proj, ("-P", "solo"))  # no -l: WARNING, Celery's default
        worker.start()  # waits for "ready." in its output
        try:
            assert "[tasks]" in worker.log and "proj.sleepy" in worker.log
        finally:
            worker.stop()
        quiet = subprocess.Popen([sys.executable, "-m", "celeriac", "-A", "proj", "-q",
                                  "worker", "-P", "solo"], cwd=tmp_path, env=proj.env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(4)
        quiet.terminate()
        out = quiet.communicate(timeout=30)[0].decode()
        assert "[tasks]" not in out and "ready." not in out, out
