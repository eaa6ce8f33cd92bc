"""Real processes: two ``celeriac -A proj beat`` on one SQLite file, the leader SIGKILLed.

Every fire time of a 0.5 s entry (``missed="all"``) between the first and the
last fire is enqueued exactly once, across the kill and the takeover.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery
from celeriac.brokers.sqlite.beat_store import SQLiteStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def wait_for(predicate: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_two_beat_processes_leader_killed(tmp_path: Path) -> None:
    db = tmp_path / "proj.sqlite3"
    module = f"beatproj_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(f"""
        from celeriac import Celery

        app = Celery("beatproj", broker="sqlite:///{db}")
        app.conf.beat_lease_seconds = 1.5
        app.conf.beat_claim_timeout = 1.0
        app.conf.beat_schedule = {{
            "fast": {{"task": "beatproj.fast", "schedule": 0.5, "missed": "all",
                      "max_lateness": 60}},
        }}
    """))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-m", "celeriac", "-A", module, "beat",
                               "-l", "WARNING"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for _ in range(2)]
    store = SQLiteStore(f"sqlite:///{db}")
    try:
        wait_for(lambda: len(store.list_fires("fast")) >= 4)
        holder = wait_for(lambda: store.lease_holder(datetime.now(timezone.utc)))
        leader = next(p for p in procs if f":{p.pid}:" in holder)
        leader.send_signal(signal.SIGKILL)
        leader.wait(10)
        killed_at = len(store.list_fires("fast"))
        wait_for(lambda: len(store.list_fires("fast")) >= killed_at + 6)
        survivor = next(p for p in procs if p is not leader)
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(10) == 0, survivor.stderr.read() if survivor.stderr else ""
        fires = store.list_fires("fast")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        store.close()
    assert fires and all(f.state == "sent" for f in fires)
    times = [f.fire_time for f in fires]
    steps = {b - a for a, b in pairwise(times)}
    assert steps == {timedelta(seconds=0.5)}, "a contiguous grid: nothing lost, nothing twice"
    app = Celery("check", broker=f"sqlite:///{db}")
    try:
        deliveries = app.broker.receive(["celery"], owner="check", limit=10_000, timeout=0)
        ids = [d.message.headers["id"] for d in deliveries]
    finally:
        app.close()
    assert len(ids) == len(set(ids)) == len(fires)
    assert set(ids) == {f.task_id for f in fires}

