"""The dashboard as users run it: ``celeriac dashboard`` and ``celeriac worker`` subprocesses.

A task sent through the dashboard fails; retrying it from the dashboard runs it again on
the real worker (it succeeds the second time); after the dashboard is restarted, both
records and the audit log are still there.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from dashboardproc import DashboardProcess, free_port
from workerproc import project, wait_until

pytest.importorskip("starlette", reason="the dashboard extra is not installed")

SOURCE = """
from pathlib import Path
from celeriac import Celery

app = Celery("proj")
app.conf.result_extended = True
MARK = Path(__file__).with_name("ran-once")

@app.task(name="proj.fail_once")
def fail_once(x):
    if not MARK.exists():
        MARK.write_text("x")
        raise ValueError(f"first run of {x}")
    return x * 2
"""


def test_retry_from_the_dashboard_runs_and_history_survives_restart(tmp_path: Path) -> None:
    from celeriac.dashboard.auth import hash_password

    users = tmp_path / "users"
    users.write_text(f"ops:admin:{hash_password('pw-ops')}\n")
    history = f"sqlite:///{tmp_path}/history.sqlite3"
    with project(tmp_path, SOURCE) as proj, proj.worker():
        board = DashboardProcess(proj, history, "--users-file", str(users)).start()
        try:
            assert board.request("GET", "/api/tasks")[0] == 401
            board.auth = base64.b64encode(b"ops:pw-ops").decode()
            status, sent = board.request("POST", "/api/tasks", {"name": "proj.fail_once",
                                                                "args": [21]})
            assert status == 200, sent
            first = sent["task_id"]

            def state_of(task_id: str) -> str:
                return str(board.request("GET", f"/api/tasks/{task_id}")[1].get("state"))

            wait_until(lambda: state_of(first) == "FAILURE", 60, 0.2, "the first run to fail")
            status, retried = board.request("POST", f"/api/tasks/{first}/retry", {})
            assert status == 200, retried
            second = retried["task_id"]
            wait_until(lambda: state_of(second) == "SUCCESS", 60, 0.2, "the retry to succeed")
            assert proj.app.AsyncResult(second).get(timeout=10) == 42
            detail = board.request("GET", f"/api/tasks/{second}")[1]
            assert detail["retried_from"] == first and detail["result"] == "42"
        finally:
            board.stop()
        again = DashboardProcess(proj, history, "--users-file", str(users))
        again.auth = base64.b64encode(b"ops:pw-ops").decode()
        again.start()
        try:
            listed = {t["task_id"]: t for t in again.request("GET", "/api/tasks")[1]["tasks"]}
            assert listed[first]["state"] == "FAILURE" and "first run of 21" in (
                listed[first]["exception"] or "")
            assert listed[second]["state"] == "SUCCESS"
            assert second in again.request("GET", f"/api/tasks/{first}")[1]["retried_as"]
            actions = [(e["user"], e["action"]) for e in
                       again.request("GET", "/api/audit")[1]["entries"]]
            assert actions[:2] == [("ops", "retry"), ("ops", "send")]
        finally:
            again.stop()


def test_refuses_to_listen_off_loopback_without_auth(tmp_path: Path) -> None:
    with project(tmp_path, SOURCE) as proj:
        done = proj.cli("dashboard", "--address", "0.0.0.0", "--port", str(free_port()),
                        "--history", f"sqlite:///{tmp_path}/h.sqlite3")
        assert done.returncode == 1
        assert "without authentication" in done.stderr
