"""One million tasks in the history: every query the pages run is served by an index.

Seeds 1,000,000 records (``bench/dashboard_pages.py``), opens every page of
:data:`PAGES` through the ASGI app while recording the SQL it runs, and checks the
plan of each statement: no full scan of the tasks table and no sort of all its rows
(``USE TEMP B-TREE FOR ORDER BY``). Page times are printed as a report, never asserted
(the suite runs on a loaded machine); ``bench/dashboard_pages.py`` is the benchmark.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the dashboard extra is not installed")

from starlette.testclient import TestClient

from celeriac import Celery
from celeriac.dashboard.config import DashboardConfig
from celeriac.dashboard.server import Dashboard, create_app

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import dashboard_pages

# seeding takes about 30 s of CPU; a loaded machine stretches that a lot
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
TASKS = 1_000_000


@pytest.fixture(scope="module")
def seeded() -> Iterator[tuple[Dashboard, dict[str, Any]]]:
    # memory-backed when the machine has it: the test checks plans, not the disk
    where = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        app = Celery("million", broker="memory://", backend="memory://",
                     set_as_current=False)
        app.conf.beat_schedule_store = f"sqlite:///{tmp}/beat.sqlite3"
        board = Dashboard.open(app, DashboardConfig.from_app(
            app, history_url=f"sqlite:///{tmp}/history.sqlite3"))
        values = dashboard_pages.seed(board.history, TASKS)
        yield board, values
        board.close()
        app.close()


def test_every_page_query_uses_an_index(seeded) -> None:  # type: ignore[no-untyped-def]
    board, values = seeded
    db = board.history.db
    assert db.read("SELECT COUNT(*) FROM dashboard_tasks")[0][0] == TASKS
    seen: list[tuple[str, list[Any]]] = []
    read = db.read

    def recording(sql: str, params: Any = ()) -> list[Any]:
        seen.append((sql, list(params)))
        return read(sql, params)

    db.read = recording  # type: ignore[method-assign]
    try:
        with TestClient(create_app(board, start_ingestor=False)) as client:
            times = dashboard_pages.measure(client, values, repeat=3)
    finally:
        db.read = read  # type: ignore[method-assign]
    task_queries = {sql: params for sql, params in seen if "dashboard_tasks" in sql}
    assert len(task_queries) >= 12
    for sql, params in task_queries.items():
        plan = db.explain(sql, params)
        for line in plan.splitlines():
            full_scan = line.strip().startswith("SCAN dashboard_tasks") and "INDEX" not in line
            assert not full_scan, f"full scan:\n{sql}\n{plan}"
        assert "USE TEMP B-TREE FOR ORDER BY" not in plan, f"sorts every row:\n{sql}\n{plan}"
    report = "\n".join(f"  {label:32s} {ms:8.1f} ms" for label, ms in times)
    print(f"\npage times at {TASKS:,} tasks (median of 3, this machine, now):\n{report}")
