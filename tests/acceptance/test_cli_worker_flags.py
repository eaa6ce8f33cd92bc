"""Acceptance: ``celery worker``'s flags on ``celeriac worker``, in real worker processes.

Production command lines (systemd units, supervisor programs, Procfiles) carry
``-Ofair --without-gossip --without-mingle --without-heartbeat -I mod``; each is
accepted and does what docs/workers.md says: ``-I`` imports the module, the
heartbeat flags drive the ``worker-*`` events, ``--uid/--gid`` run the worker as
that user, Celery pools celeriac lacks are refused naming the alternatives.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from workerproc import Project, project, project_fixture, wait_until

PROJ = """
    import os
    from celeriac import Celery, signals

    app = Celery("proj")


    @signals.celeryd_init.connect
    def configure_worker(conf=None, **kwargs):
        conf.timezone = "Asia/Tokyo"  # changed in the worker's main process only


    @app.task
    def add(x, y):
        return x + y


    @app.task
    def ids():
        return [os.getuid(), os.getgid()]


    @app.task
    def default_queue():
        return app.conf.task_default_queue


    @app.task
    def zone():
        return str(app.conf.timezone)
"""

EXTRA = """
from proj import app


@app.task(name="extra.mul")
def mul(x, y):
    return x * y
"""


proj = project_fixture(PROJ, extra_module=EXTRA)


def test_production_flags_are_accepted_and_include_imports_the_module(proj: Project) -> None:
    with proj.worker("-Ofair", "--without-gossip", "--without-mingle", "--without-heartbeat",
                     "-I", "extra_module", "--disable-prefetch", "--statedb",
                     str(proj.path / "worker.state"), "--pool-start-method", "fork",
                     "--executable", sys.executable, "-c", "auto") as w:
        sent = proj.cli("call", "extra.mul", "--args", "[6, 7]")
        assert sent.returncode == 0, sent.stderr
        assert proj.app.AsyncResult(sent.stdout.strip()).get(timeout=30) == 42
        assert "extra.mul" in w.log
        stats = proj.app.control.inspect(timeout=2).stats()
    # --disable-prefetch: the prefetch rule leases no extra messages
    assert stats, "the worker answered inspect stats"
    prefetch = next(iter(stats.values()))["prefetch"]
    assert (prefetch["rule"], prefetch["extra"]) == ("fixed", 0), prefetch
    assert not (proj.path / "worker.state").exists()  # revocations live in the result store


def test_spawned_children_get_config_and_included_modules(proj: Project) -> None:
    (proj.path / "cfgmod.py").write_text("task_default_queue = 'from_config'\n")
    worker_command = [sys.executable, "-m", "celeriac", "-A", "proj", "--config", "cfgmod",
                      "worker", "-P", "prefork", "-c", "1", "--pool-start-method", "spawn",
                      "-I", "extra_module", "-l", "INFO"]
    log = (proj.path / "spawn.log").open("wb")
    proc = subprocess.Popen(worker_command, cwd=proj.path, env=proj.env(), stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "ready." in (proj.path / "spawn.log").read_text(), 60,
                   what="the spawn worker to start")
        app = proj.app
        assert app.send_task("proj.default_queue", queue="from_config").get(timeout=60) \
            == "from_config"
        assert app.send_task("extra.mul", (3, 3), queue="from_config").get(timeout=60) == 9
        # a setting changed in the supervisor (a celeryd_init handler) reaches the child,
        # as a forked child inherits it
        assert app.send_task("proj.zone", queue="from_config").get(timeout=60) == "Asia/Tokyo"
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()


def _events(proj: Project, seconds: str) -> list[dict[str, object]]:
    dump = proj.cli("events", "--dump", "--json", "--limit", "4", "--timeout", seconds)
    return [json.loads(line) for line in dump.stdout.splitlines() if line.strip()]


def test_heartbeat_interval_sets_the_worker_heartbeat_events(proj: Project) -> None:
    with proj.worker("-n", "hb@%h", "--heartbeat-interval", "1"):
        events = _events(proj, "10")
    beats = [e for e in events if e["type"] == "worker-heartbeat"]
    assert beats and all(e["freq"] == 1.0 for e in beats), events


def test_without_heartbeat_sends_no_worker_events(proj: Project) -> None:
    with proj.worker("-n", "quiet@%h", "--without-heartbeat"):
        assert proj.client().add.delay(1, 2).get(timeout=30) == 3
        events = _events(proj, "4")
    assert not [e for e in events if str(e.get("type", "")).startswith("worker-")], events


@pytest.mark.parametrize(("args", "message"), [
    (("-P", "eventlet"), "-P asyncio"),
    (("-P", "gevent"), "-P threads"),
    (("--executable", "/bin/sh"), "detaches by forking"),
    (("-c", "many"), "'many' is not a number or 'auto'"),
    (("-O", "fast"), "'fast' is not one of 'default', 'fair'"),
    (("--uid", "no-such-user-here"), "--uid: no such user: no-such-user-here"),
    (("--gid", "no-such-group-here"), "--gid: no such group: no-such-group-here"),
    (("-B", "--scheduler", "nosuch.mod:Cls"), "beat_scheduler: cannot import 'nosuch.mod:Cls'"),
])
def test_flags_celeriac_cannot_honour_are_refused(proj: Project, args: tuple[str, ...],
                                                  message: str) -> None:
    run = proj.cli("worker", *args, timeout=30)
    assert run.returncode != 0
    assert message in run.stderr, run.stderr


def _python_for(uid: int) -> tuple[str, dict[str, str]] | None:
    """An interpreter that user ``uid`` can run with celeriac importable, and its env."""
    paths = [p for p in sys.path if p.endswith("site-packages")]
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {"PYTHONPATH": os.pathsep.join([src, *paths])}
    for python in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        try:
            probe = subprocess.run(
                [python, "-c", "import sys, multiprocessing.sharedctypes, celeriac; "
                               "print(sys.version_info[:2])"],
                user=uid, env={**os.environ, **env}, capture_output=True, text=True,
                timeout=60, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0 and probe.stdout.strip() == str(tuple(sys.version_info[:2])):
            return python, env
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_uid_and_gid_run_the_worker_as_nobody() -> None:
    import grp
    import pwd

    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid).gr_name
    found = _python_for(nobody.pw_uid)
    if found is None:
        pytest.skip("no Python interpreter here that user nobody may read")
    python, extra_env = found
    path = Path(tempfile.mkdtemp(prefix="celeriac-uid-"))
    path.chmod(0o777)  # the dropped worker writes its database and pidfile here
    with project(path, PROJ) as proj:
        log = (path / "worker.log").open("wb")
        worker = subprocess.Popen(
            [python, "-m", "celeriac", "-A", "proj", "worker", "-P", "prefork", "-c", "1",
             "-l", "INFO", "--uid", "nobody", "--gid", group, "--pidfile",
             str(path / "w.pid")], cwd=path, env=proj.env(**extra_env), stdout=log,
            stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: "ready." in (path / "worker.log").read_text(), 60,
                       what="the worker to start")
            result = proj.client().ids.delay()
            assert result.get(timeout=30) == [nobody.pw_uid, nobody.pw_gid]
            assert (path / "w.pid").stat().st_uid == nobody.pw_uid
        finally:
            worker.terminate()
            worker.wait(30)
            log.close()
    shutil.rmtree(path, ignore_errors=True)
