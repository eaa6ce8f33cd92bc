"""A PostgreSQL restart in the middle of a run, on a private cluster started for the test.

The shared server is never touched: the test runs ``initdb`` into a temporary
directory and ``pg_ctl`` on a free port (as the ``postgres`` user when run as
root, since PostgreSQL refuses to run as root). A prefork worker drains tasks; the
server is stopped in ``immediate`` mode (a crash: no shutdown checkpoint) and started
again 3 s later. Workers must resume within 10 s of the server being back, and every
task published before or after the restart must finish: nothing committed is lost.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.postgres
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
BIN = Path(os.environ.get("CELERIAC_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _harness() -> Any:
    path = Path(__file__).resolve().parents[1] / "acceptance" / "workerharness.py"
    spec = importlib.util.spec_from_file_location("celeriac_pg_restart_harness", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


H = _harness()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """A throw-away PostgreSQL cluster in a temporary directory."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="celeriac-pg-"))
        self.data, self.port = self.root / "data", free_port()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self.run(BIN / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
                 "--no-sync")

    def run(self, *args: Any) -> None:
        command = [str(a) for a in args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self.run(BIN / "pg_ctl", "-D", self.data, "-l", self.root / "server.log", "-w",
                 "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                 "-c autovacuum=off", "start")

    def stop(self, mode: str = "fast") -> None:
        self.run(BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if not (BIN / "initdb").exists():
        if IN_CI:
            pytest.fail(f"{BIN}/initdb is missing (CI=true: PostgreSQL is required)")
        pytest.skip(f"{BIN}/initdb is missing")
    made = Cluster()
    try:
        made.start()
        yield made
    finally:
        made.destroy()


@pytest.mark.timeout(240)
def test_workers_resume_after_a_server_restart(cluster: Cluster, tmp_path: Path) -> None:
    project = H.Project(tmp_path, broker=cluster.url, backend=cluster.url,
                        conf={"worker_lease_seconds": 5})
    try:
        before = project.publish_many("work", [(20,)] * 600)
        project.start_worker("-c", "2", "--prefetch-multiplier", "1")
        H.wait_until(lambda: project.states(before)["SUCCESS"] >= 100, 60,
                     what="100 tasks before the restart")
        cluster.stop("immediate")
        time.sleep(3)
        cluster.start()
        back = time.monotonic()
        done_at_restart = project.states(before)["SUCCESS"]
        H.wait_until(lambda: project.states(before)["SUCCESS"] > done_at_restart + 5, 30,
                     interval=0.1, what="the worker to resume")
        resumed = time.monotonic() - back
        after = project.publish_many("work", [(1,)] * 100)
        H.wait_until(lambda: project.states(before + after)["SUCCESS"] == 700, 120,
                     what="every task, published before and after the restart")
        print(f"\npostgres restart: resumed {resumed:.1f}s after the server was back")
        print(project.log_text()[-6000:]) if os.environ.get("PG_RESTART_LOG") else None
        assert resumed < 10
        assert not project.app.broker.dead_letters()
        assert not project.app.broker.stats("celery").ready
    finally:
        project.stop_all()
        project.app.close()
