"""The dashboard in a real browser (Debian's headless Chromium driven by Playwright) against a
live cluster: a ``celeriac worker`` and a ``celeriac dashboard`` subprocess.

It logs in, opens every page, retries a failed task (the retry runs on the worker), bulk-
revokes waiting tasks after a confirmation that shows their count, and edits, disables and
runs a schedule. With ``CELERIAC_DASHBOARD_SCREENSHOTS=DIR`` it saves a screenshot of each
page there (how docs/dashboard/*.png are made). Skips without Chromium or Playwright
locally; fails instead under CI=true.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboardproc import DashboardProcess
from tests.conftest import IN_CI
from workerproc import project, wait_until

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]

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

@app.task(name="proj.later")
def later(n):
    return n

@app.task(name="proj.report")
def report(kind):
    return kind
"""


def _require(ok: bool, why: str) -> None:
    if ok:
        return
    if IN_CI:
        pytest.fail(why + " (CI=true: browser tests are required)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _require(os.path.exists(CHROMIUM), f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "playwright is not installed")
        raise
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield chromium
        chromium.close()


def shoot(page: Any, name: str) -> None:
    target = os.environ.get("CELERIAC_DASHBOARD_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(target) / f"{name}.png"), full_page=False)


def test_pages_retry_bulk_revoke_and_schedule_edits(browser: Any, tmp_path: Path) -> None:
    pytest.importorskip("starlette", reason="the dashboard extra is not installed")
    from celeriac.dashboard.auth import hash_password

    users = tmp_path / "users"
    users.write_text(f"ops:admin:{hash_password('pw-ops')}\n")
    with project(tmp_path, SOURCE) as proj, proj.worker():
        proj.app.schedules.add("nightly-report", "proj.report", 3600, args=("daily",))
        board = DashboardProcess(proj, f"sqlite:///{tmp_path}/history.sqlite3",
                                 "--users-file", str(users)).start()
        board.auth = base64.b64encode(b"ops:pw-ops").decode()
        try:
            failing = board.request("POST", "/api/tasks", {"name": "proj.fail_once",
                                                           "args": [21]})[1]["task_id"]
            waiting = [board.request("POST", "/api/tasks", {
                "name": "proj.later", "args": [i], "countdown": 600})[1]["task_id"]
                for i in range(3)]
            wait_until(lambda: board.request("GET", f"/api/tasks/{failing}")[1]["state"]
                       == "FAILURE", 60, 0.2, "the first run to fail")
            base = f"http://127.0.0.1:{board.port}"
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(20_000)

            # log in
            page.goto(f"{base}/tasks")
            assert "Log in" in page.inner_text("h1")
            shoot(page, "login")
            page.fill("input[name=username]", "ops")
            page.fill("input[name=password]", "pw-ops")
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/tasks")

            # every page opens
            for path, heading, name in [("/", "Overview", "overview"),
                                        ("/tasks", "Tasks", "tasks"),
                                        ("/workers", "Workers", "workers"),
                                        ("/queues", "Queues", "queues"),
                                        ("/schedules", "Schedules", "schedules"),
                                        ("/deadletters", "Dead letters", "deadletters")]:
                page.goto(base + path)
                assert page.inner_text("h1") == heading
                shoot(page, name)
            page.goto(f"{base}/workers")
            assert "online" in page.inner_text("table.workers")

            # retry a failed task: the retry runs on the worker
            page.goto(f"{base}/tasks/{failing}")
            assert page.inner_text("#task-state") == "FAILURE"
            assert "first run of 21" in page.inner_text("table.detail")
            shoot(page, "task-detail")
            page.click("#retry-button")
            link = page.wait_for_selector("#action-result a")
            retry_id = link.inner_text()
            link.click()
            page.wait_for_url(f"{base}/tasks/{retry_id}")

            def retried_ok() -> bool:
                page.reload()
                return page.inner_text("#task-state") == "SUCCESS"

            wait_until(retried_ok, 60, 0.5, "the retried task to succeed in the page")
            assert page.inner_text("#task-result") == "42"
            assert proj.app.AsyncResult(retry_id).get(timeout=10) == 42

            # bulk revoke everything matching a filter, after confirming the count
            page.goto(f"{base}/tasks?name=proj.later&state=SENT")
            assert page.locator("table.tasks tbody tr").count() == 3
            page.click("form.bulk button[value=revoke]")
            confirm = page.wait_for_selector("#confirm-button")
            assert confirm.inner_text() == "Yes, revoke 3"
            shoot(page, "bulk-confirm")
            confirm.click()
            assert "3 of 3 done" in page.wait_for_selector("#action-result").inner_text()
            for task_id in waiting:
                assert proj.app.AsyncResult(task_id).state == "REVOKED"
            wait_until(lambda: all(board.request("GET", f"/api/tasks/{t}")[1]["state"]
                                   == "REVOKED" for t in waiting), 30, 0.2,
                       "the revoked tasks to show as REVOKED")

            # schedules: edit, disable, run now
            page.goto(f"{base}/schedules")
            row = page.locator("#schedule-nightly-report")
            row.locator("summary").click()
            row.locator("input[name=schedule]").fill("every 120s")
            row.locator("input[name=args]").fill('["weekly"]')
            row.locator("form.edit-schedule button").click()
            page.wait_for_selector("text=nightly-report saved.")
            info = proj.app.schedules.get("nightly-report")
            assert info.schedule == "every 120s" and info.args == ("weekly",)
            assert "every 120s" in page.inner_text("#schedule-nightly-report .schedule-spec")
            page.locator("#schedule-nightly-report button", has_text="Disable").click()
            page.wait_for_selector("text=nightly-report disabled.")
            assert not proj.app.schedules.get("nightly-report").enabled
            assert page.inner_text("#schedule-nightly-report .enabled") == "no"
            page.locator("#schedule-nightly-report button", has_text="Run now").click()
            page.wait_for_selector("text=sent as task")
            sent = page.inner_text(".flash").rsplit(" ", 1)[-1].rstrip(".")
            assert proj.app.AsyncResult(sent).get(timeout=30) == "weekly"

            # every action is in the audit log
            page.goto(f"{base}/audit")
            log = page.inner_text("table.audit")
            for action in ("retry", "bulk-revoke", "schedule-edit", "schedule-disable",
                           "schedule-run"):
                assert action in log
            shoot(page, "audit")
            page.close()
        finally:
            board.stop()
