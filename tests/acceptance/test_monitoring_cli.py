"""Monitoring through the real CLI and real worker processes (embedded SQLite broker).

``celeriac inspect``/``control`` against a prefork worker (active, scheduled from
the broker's delayed set, revoke with terminate stopping a running task, pool
resizing), ``celeriac events --dump`` and the SQLite camera, ``celeriac multi``
with ``%n`` pidfiles, the metrics endpoint scraped and parsed, and a queue whose
time-to-start target is breached flagged by the worker's log, the metrics and
``celeriac status``.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from workerproc import project, wait_until

SOURCE = """
    import time
    from celeriac import Celery

    app = Celery("proj")
    app.conf.task_queue_targets = {"fast": "1s", "celery": "1h"}

    @app.task
    def add(x, y):
        return x + y

    @app.task
    def sleep(seconds):
        time.sleep(seconds)
        return seconds
"""


def test_inspect_and_control_a_prefork_worker(tmp_path: Path) -> None:
    with project(tmp_path, SOURCE) as proj, \
            proj.worker("-n", "pf1@%h", "-E", pool="prefork", concurrency=2):
        app = proj.app
        ping = proj.cli("inspect", "ping", "-t", "2")
        assert ping.returncode == 0, ping.stderr
        assert "pf1@" in ping.stdout and "pong" in ping.stdout and "1 node online." in ping.stdout
        later = proj.client().add.apply_async((1, 2), countdown=300)
        running = proj.client().sleep.delay(60)
        scheduled = json.loads(proj.cli("inspect", "scheduled", "--json", "-t", "2").stdout)
        assert [s["request"]["id"] for s in next(iter(scheduled.values()))] == [later.id]
        active = wait_until(lambda: next(iter((app.control.inspect(timeout=1).active()
                                                or {"": []}).values())), 30, what="active")
        assert [(a["id"], a["name"], a["args"]) for a in active] == [
            (running.id, "proj.sleep", [60])]
        revoked = proj.cli("control", "terminate", "SIGKILL", running.id, "-t", "2")
        assert revoked.returncode == 0 and f"terminate: {running.id}" in revoked.stdout
        wait_until(lambda: running.state == "REVOKED", 30, what="the task revoked")
        wait_until(lambda: not (app.control.inspect(timeout=1).active() or {"": [1]})
                   .popitem()[1], 30, what="the child to stop the task")
        grown = proj.cli("control", "pool_grow", "1", "--json", "-t", "2")
        assert list(json.loads(grown.stdout).values()) == [{"ok": "pool will grow"}]
        stats = wait_until(lambda: (s := app.control.inspect(timeout=1).stats())
                           and len(next(iter(s.values()))["pool"]["processes"]) == 3 and s,
                           30, what="a third child")
        assert next(iter(stats.values()))["pool"]["max-concurrency"] == 3
        nobody = proj.cli("inspect", "ping", "-d", "nobody@nowhere", "-t", "1")
        assert nobody.returncode == 69 and "No nodes replied" in nobody.stderr


def test_events_dump_and_sqlite_camera(tmp_path: Path) -> None:
    with project(tmp_path, SOURCE) as proj, proj.worker("-n", "ev1@%h", "-E"):
        proj.client().add.delay(1, 1).get(timeout=30)  # the worker is up and running
        dump = proj.cli("events", "--dump", "--json", "--limit", "3", "--timeout", "10")
        camera_db = tmp_path / "cam.sqlite3"
        cam_log = (tmp_path / "camera.log").open("wb")
        cam = subprocess.Popen([sys.executable, "-m", "celeriac", "-A", "proj", "events",
                                "--camera", "sqlite", "--frequency", "0.5", "--camera-db",
                                str(camera_db)], cwd=tmp_path, env=proj.env(),
                               stdout=cam_log, stderr=subprocess.STDOUT)
        try:
            def workers_seen() -> list[tuple[str, int]]:
                try:
                    with sqlite3.connect(camera_db) as conn:
                        return conn.execute("SELECT hostname, alive FROM workers").fetchall()
                except sqlite3.OperationalError:  # not created yet
                    return []
            # the camera listens once it has recorded a heartbeat (events are not kept)
            wait_until(workers_seen, 60, what="the camera to record the worker")
            result = proj.client().add.delay(2, 3)
            assert result.get(timeout=30) == 5

            def stored() -> object:
                if not camera_db.exists():
                    return None
                try:
                    with sqlite3.connect(camera_db) as conn:
                        return conn.execute("SELECT state, name, result FROM tasks"
                                            " WHERE uuid = ?", (result.id,)).fetchone()
                except sqlite3.OperationalError:  # the camera is creating its tables
                    return None
            try:
                row = wait_until(lambda: (r := stored()) and r[0] == "SUCCESS" and r, 30,
                                 what="the camera's row")
            except AssertionError:
                with sqlite3.connect(camera_db) as conn:
                    rows = conn.execute("SELECT * FROM tasks").fetchall()
                raise AssertionError(f"{rows}\n{(tmp_path / 'camera.log').read_text()}")
            assert row == ("SUCCESS", "proj.add", "5")
            assert any(h.startswith("ev1@") and alive for h, alive in workers_seen())
        finally:
            cam.terminate()
            cam.wait(20)
            cam_log.close()
        events = [json.loads(line) for line in dump.stdout.splitlines() if line.strip()]
        assert any(e["type"] == "worker-heartbeat" and e["hostname"].startswith("ev1@")
                   for e in events), dump.stdout + dump.stderr


def test_multi_start_and_stop_with_pidfiles(tmp_path: Path) -> None:
    run, log = tmp_path / "run", tmp_path / "log"
    files = ("--pidfile", f"{run}/%n.pid", "--logfile", f"{log}/%n%I.log")
    with project(tmp_path, SOURCE) as proj:
        started = proj.raw_cli("multi", "start", "worker1", "worker2", "--app=proj",
                               "--loglevel=INFO", "-P", "threads", *files, timeout=90)
        try:
            assert started.returncode == 0, started.stdout + started.stderr
            assert started.stdout.count(": OK") == 2
            pids = {p.name: int(p.read_text()) for p in run.iterdir()}
            assert set(pids) == {"worker1.pid", "worker2.pid"}
            assert sorted(p.name for p in log.iterdir()) == ["worker1.log", "worker2.log"]
            # ``multi start`` returns once each node is detached with its pidfile, as
            # Celery's does; a node answers once it is ready (later on a loaded machine)
            deadline = time.monotonic() + 60
            while True:
                ping = proj.cli("inspect", "ping", "-t", "2")
                if ping.stdout.count("pong") == 2 or time.monotonic() > deadline:
                    break
            assert ping.stdout.count("pong") == 2, ping.stdout
            again = proj.raw_cli("multi", "start", "worker1", "--app=proj", *files)
            assert "already running" in again.stdout
            assert int((run / "worker1.pid").read_text()) == pids["worker1.pid"]
        finally:
            stopped = proj.raw_cli("multi", "stop", "worker1", "worker2", *files, timeout=120)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        for pid in pids.values():
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert list(run.iterdir()) == []
        assert "Warm shutdown" in (log / "worker1.log").read_text()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """The samples of /metrics as ``{'name{labels}': value}``."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def test_metrics_and_a_breached_queue_target(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    port = free_port()
    with project(tmp_path, SOURCE) as proj:
        tasks = proj.client()
        backlog = [tasks.add.apply_async((i, i), queue="fast") for i in range(3)]
        time.sleep(2.5)  # they wait longer than the fast queue's 1 s target
        with proj.worker("-n", "m1@%h", "-Q", "fast,celery", "--metrics-port", str(port)) as w:
            assert [r.get(timeout=30) for r in backlog] == [0, 2, 4]
            assert tasks.add.delay(5, 5).get(timeout=30) == 10
            w.wait_for_log("over the queue's time-to-start target of 1s", count=3)
            metrics = wait_until(lambda: (m := scrape(port)).get(
                "celeriac_tasks_total{name=proj.add,state=SUCCESS}") == 4 and m, 30,
                what="4 successes in the metrics")
            assert metrics["celeriac_task_time_to_start_seconds_count{name=proj.add,"
                           "queue=fast}"] == 3
            assert metrics["celeriac_queue_time_to_start_breaches_total{queue=fast}"] == 3
            assert metrics["celeriac_queue_time_to_start_breached{queue=fast}"] == 1
            assert metrics["celeriac_queue_time_to_start_breached{queue=celery}"] == 0
            assert metrics["celeriac_queue_time_to_start_target_seconds{queue=fast}"] == 1
            assert metrics["celeriac_queue_messages{queue=fast,state=ready}"] == 0
            assert any(k.startswith("celeriac_worker_up{hostname=m1@") and v == 1
                       for k, v in metrics.items())
            status = wait_until(lambda: (s := proj.cli("status")) and "BREACHED" in s.stdout
                                and s, 30, what="status flagging the queue")
            assert status.returncode == 1
            assert "time-to-start target breached on: fast" in status.stderr
            line = next(x for x in status.stdout.splitlines() if x.startswith("fast "))
            assert line.endswith("BREACHED") and "1s" in line
