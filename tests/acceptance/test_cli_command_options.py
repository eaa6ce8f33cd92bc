"""Acceptance: the options Celery's ``call``, ``inspect``/``control``, ``status``, ``beat``
and ``events`` have, on celeriac's commands, through real processes.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from workerproc import Project, project_fixture, wait_until

PROJ = """
    from celeriac import Celery

    app = Celery("proj")
    app.conf.beat_schedule = {"tick": {"task": "proj.add", "schedule": 0.5, "args": (1, 1)}}


    @app.task
    def add(x, y):
        return x + y
"""


proj = project_fixture(PROJ)


def test_call_routing_key_and_serializer(proj: Project) -> None:
    sent = proj.cli("call", "proj.add", "--args", "[2, 5]", "--routing-key", "rk",
                    "--serializer", "json")
    assert sent.returncode == 0, sent.stderr
    assert proj.app.broker.stats("rk").ready == 1
    with proj.worker("-Q", "rk"):
        assert proj.app.AsyncResult(sent.stdout.strip()).get(timeout=30) == 7
    bad = proj.cli("call", "proj.add", "--serializer", "nope")
    assert bad.returncode != 0 and "nope" in bad.stderr


def test_inspect_and_control_list(proj: Project) -> None:
    listed = proj.cli("inspect", "--list")
    assert listed.returncode == 0, listed.stderr
    assert "  ping" in listed.stdout and "  query_task [ids...]" in listed.stdout
    control = proj.cli("control", "--list").stdout
    assert "  revoke [task_id...]" in control and "  pool_grow [n]" in control
    missing = proj.cli("control")
    assert missing.returncode == 2 and "--list shows them" in missing.stderr


def test_status_json_destination_and_timeout(proj: Project) -> None:
    with proj.worker("-n", "st1@%h"):
        proj.client().add.delay(1, 1).get(timeout=30)
        mine = proj.cli("status", "-j", "-d", "st1", "-t", "5")
        other = proj.cli("status", "-d", "someone-else", "-t", "0.5")
    assert mine.returncode == 0, mine.stderr
    assert [n["hostname"].split("@")[0] for n in json.loads(mine.stdout)] == ["st1"]
    assert other.returncode == 1 and "No nodes replied" in other.stderr


def _stop(pidfile: Path) -> None:
    pid = int(pidfile.read_text().split()[0])
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pidfile.exists(), 30, what="the daemon to stop")


def test_beat_detached_with_pidfile_logfile_and_hostname(proj: Project) -> None:
    pidfile, logfile = proj.path / "beat.pid", proj.path / "beat.log"
    run = proj.cli("beat", "--detach", "--pidfile", str(pidfile), "-f", str(logfile),
                   "-n", "beat1@%h", "--no-enable-remote-control", "--umask", "022",
                   "--store", f"sqlite:///{proj.path / 'beat.sqlite3'}")
    assert run.returncode == 0, run.stderr
    try:
        wait_until(pidfile.exists, 30, what="the pidfile")
        wait_until(lambda: proj.app.broker.stats("celery").ready >= 2, 30,
                   what="beat to send ticks")
        assert "node beat1@" in logfile.read_text()
    finally:
        _stop(pidfile)
    warned = proj.cli("beat", "--enable-remote-control", "--executable", "/bin/sh")
    assert warned.returncode == 2 and "--executable /bin/sh" in warned.stderr


def test_events_camera_detached(proj: Project) -> None:
    refused = proj.cli("events", "--detach")
    assert refused.returncode == 2 and "give --camera" in refused.stderr
    pidfile, camera_db = proj.path / "ev.pid", proj.path / "cam.sqlite3"
    run = proj.cli("events", "--camera", "sqlite", "--camera-db", str(camera_db), "-F", "0.5",
                   "--detach", "--pidfile", str(pidfile), "-f", str(proj.path / "ev.log"),
                   "-l", "INFO")
    assert run.returncode == 0, run.stderr
    try:
        wait_until(pidfile.exists, 30, what="the pidfile")
        with proj.worker("-n", "cam@%h"):
            wait_until(camera_db.exists, 30, what="the camera's database")
    finally:
        _stop(pidfile)


def test_multi_get_expand_range_prefix_and_stop_signal(proj: Project) -> None:
    got = proj.cli("multi", "get", "w2", "w1", "w2", "-c:w2", "3")
    assert got.returncode == 0, got.stderr
    assert " -n w2@" in got.stdout and got.stdout.rstrip().endswith("-c 3")
    expanded = proj.cli("multi", "expand", "/run/%n.pid", "2", "--range-prefix", "job")
    assert expanded.stdout.split() == ["/run/job1.pid", "/run/job2.pid"]
    assert proj.cli("multi", "get", "nobody", "w1").returncode == 1
    files = ["--pidfile", str(proj.path / "%n.pid"), "--logfile", str(proj.path / "%n.log")]
    started = proj.cli("multi", "start", "m1", "-P", "solo", "--nosplash", *files)
    assert started.returncode == 0, started.stderr + started.stdout
    assert "Starting nodes" not in started.stdout and "m1@" in started.stdout
    stopped = proj.cli("multi", "stop", "m1", "-KILL", *files)
    assert stopped.returncode == 0, stopped.stderr
    assert "Sending SIGKILL to m1@" in stopped.stdout
    quiet = proj.cli("multi", "stop", "m1", "-q", *files)  # the stale pidfile is removed
    assert quiet.returncode == 0 and quiet.stdout == ""
    assert not (proj.path / "m1.pid").exists()
