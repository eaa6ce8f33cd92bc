"""``celeriac deadletters`` and ``celeriac status`` (ping and liveness probe) end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import workerharness as H


@pytest.fixture
def project(tmp_path: Path) -> Any:
    proj = H.Project(tmp_path)
    yield proj
    proj.close()


def cli(project: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(project.root))
    return subprocess.run([sys.executable, "-m", "celeriac", "-A", project.module, *args],
                          cwd=project.root, env=env, capture_output=True, text=True,
                          timeout=60)


def _dead_letter(project: Any, name: str, args: tuple[Any, ...]) -> str:
    project.publish_many(name, [args])
    broker = project.app.broker
    [delivery] = broker.receive([project.app.conf.task_default_queue], owner="t", limit=1,
                                timeout=1)
    assert broker.dead_letter(delivery, "worker_lost: 3 deliveries lost with their worker")
    return str(delivery.message.task_id)


def test_deadletters_list_retry_purge(project: Any) -> None:
    task_id = _dead_letter(project, "work", ("x" * 500,))
    listed = cli(project, "deadletters", "list")
    assert listed.returncode == 0, listed.stderr
    out = listed.stdout
    assert "worker_lost" in out and f"{project.module}.work[{task_id}]" in out
    assert "deliveries: 1" in out and "first delivered:" in out and "dead at:" in out
    assert "x" * 500 not in out and "..." in out  # args are repr-limited
    dead_id = project.app.broker.dead_letters()[0].id
    retried = cli(project, "deadletters", "retry", "--id", dead_id)
    assert retried.returncode == 0 and "Retried 1" in retried.stdout
    assert not project.app.broker.dead_letters()
    assert project.app.broker.stats(project.app.conf.task_default_queue).ready == 1
    missing = cli(project, "deadletters", "retry", "--id", "999999")
    assert missing.returncode != 0
    _dead_letter(project, "pid", ())
    _dead_letter(project, "pid", ())
    purged = cli(project, "deadletters", "purge", "-f")
    assert purged.returncode == 0 and "Purged 2" in purged.stdout
    assert "No dead letters" in cli(project, "deadletters", "list").stdout


def test_status_pings_workers_and_probes_liveness(project: Any) -> None:
    assert cli(project, "status").returncode != 0, "no worker: status must fail"
    liveness = project.root / "alive"
    worker = project.start_worker("-c", "1", "--liveness-file", str(liveness))
    H.wait_until(lambda: cli(project, "status").returncode == 0, 20, interval=0.5,
                 what="the node heartbeat")
    out = cli(project, "status").stdout
    assert "w1@" in out and "1 node online" in out
    H.wait_until(liveness.exists, 10, what="the liveness file")
    probe = cli(project, "status", "--liveness", "w1")
    assert probe.returncode == 0, probe.stderr
    # freeze the whole worker with work waiting: the probe must fail
    os.killpg(worker.pid, signal.SIGSTOP)
    try:
        project.publish_many("work", [(1,)] * 3)
        time.sleep(2.5)
        frozen = cli(project, "status", "--liveness", "w1", "--max-silence", "1",
                     "--max-age", "60")
        assert frozen.returncode != 0
        assert "no progress" in frozen.stderr
        stale = time.time() - liveness.stat().st_mtime
        assert stale >= 2
    finally:
        os.killpg(worker.pid, signal.SIGCONT)
    H.wait_until(lambda: cli(project, "status", "--liveness", "w1", "--max-silence", "5")
                 .returncode == 0, 20, interval=0.5, what="liveness after SIGCONT")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    assert cli(project, "status").returncode != 0, "a stopped node removes its record"
