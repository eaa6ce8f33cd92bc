"""Dashboard page times on a large history: seed N task records, time every page.

```console
$ .venv/bin/python bench/dashboard_pages.py              # 1,000,000 tasks (about a minute)
$ .venv/bin/python bench/dashboard_pages.py --tasks 100000 --history sqlite:///h.sqlite3
```

Seeds the history store (SQLite by default; ``--history postgresql://...?schema=x``)
with N records over seven days (8 final states, 200 task names, 5 queues, 10
workers, ``argsrepr`` with a customer number) and the per-minute counts of the
last day, then requests each page through the ASGI app and prints the median of
``--repeat`` requests per page. It prints; it never asserts a time.
``tests/dashboard/test_million_rows.py`` uses :func:`seed` and :data:`PAGES`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from celeriac.dashboard.history import HistoryStore
from celeriac.dashboard.history.records import TASK_COLUMNS
from celeriac.dashboard.history.store import INDEXES

STATES = ["SUCCESS"] * 16 + ["FAILURE", "REVOKED", "RETRY", "STARTED"]
SPAN = 7 * 86400.0

#: (label, path): every page a user opens, filters and a deep page included.
PAGES = [
    ("tasks, newest", "/tasks"),
    ("tasks, state=FAILURE", "/tasks?state=FAILURE"),
    ("tasks, name", "/tasks?name=proj.tasks.t17"),
    ("tasks, queue", "/tasks?queue=q3"),
    ("tasks, worker", "/tasks?worker=w7%40host"),
    ("tasks, time range", "/tasks?since={mid}&until={mid_end}"),
    ("tasks, deep page", "/tasks?before={deep}"),
    ("tasks, args text", "/tasks?text=customer-42"),
    ("task detail", "/tasks/{some_id}"),
    ("overview", "/"),
    ("queues", "/queues"),
    ("workers", "/workers"),
    ("bulk count (state=FAILURE)", "/api/tasks/count?state=FAILURE"),
    ("API tasks, name + state", "/api/tasks?name=proj.tasks.t17&state=SUCCESS"),
]


def rows(n: int, now: float) -> Iterator[tuple[Any, ...]]:
    start = now - SPAN
    step = SPAN / n
    for i in range(n):
        ts = start + i * step
        state = STATES[i % len(STATES)]
        done = state in ("SUCCESS", "FAILURE", "REVOKED")
        values = {
            "task_id": f"{i:08d}-0000-4000-8000-{i:012d}", "name": f"proj.tasks.t{i % 200}",
            "state": state, "queue": f"q{i % 5}", "routing_key": f"q{i % 5}",
            "worker": f"w{i % 10}@host", "args": f"({i}, 'customer-{i % 1000}')",
            "kwargs": "{}", "result": "None" if state == "SUCCESS" else None,
            "exception": "ValueError('boom')" if state == "FAILURE" else None,
            "traceback": None, "retries": 0, "root_id": f"{i:08d}-0000-4000-8000-{i:012d}",
            "parent_id": None, "eta": None, "expires": None, "sent_at": ts,
            "received_at": ts + 0.01, "started_at": ts + 0.02,
            "finished_at": ts + 0.05 if done else None, "runtime": 0.03 if done else None,
            "ts": ts, "state_ts": ts + 0.05, "updated_at": ts + 0.05, "retried_from": None,
            "source": "events"}
        yield tuple(values[c] for c in TASK_COLUMNS)


def seed(store: HistoryStore, n: int, now: float | None = None) -> dict[str, Any]:
    """Write ``n`` records (indexes dropped while loading, then rebuilt); returns values the
    page paths need (a mid-range time, a deep cursor, an id)."""
    now = time.time() if now is None else now

    def drop(cur: Any) -> None:
        for name in INDEXES:
            cur.execute(f"DROP INDEX IF EXISTS {name}")

    store.db.write(drop)
    if store.db.kind == "sqlite":  # a throw-away file: no need to wait for the disk
        store.db.read("PRAGMA synchronous=OFF")
    placeholders = ", ".join("?" for _ in TASK_COLUMNS)
    batch: list[tuple[Any, ...]] = []

    def flush(cur: Any) -> None:
        cur.executemany(f"INSERT INTO dashboard_tasks ({', '.join(TASK_COLUMNS)}) "
                        f"VALUES ({placeholders})", batch)

    for row in rows(n, now):
        batch.append(row)
        if len(batch) >= 50_000:
            store.db.write(flush)
            batch = []
    if batch:
        store.db.write(flush)
    per_minute = max(1, n // (7 * 1440))
    counts = [(m, s, per_minute if s == "SUCCESS" else max(1, per_minute // 16))
              for m in range(int((now - 86400) // 60), int(now // 60) + 1)
              for s in ("SUCCESS", "FAILURE")]
    store.db.write(lambda cur: cur.executemany(
        "INSERT INTO dashboard_throughput (minute, state, n) VALUES (?, ?, ?) "
        "ON CONFLICT (minute, state) DO NOTHING", counts))
    store.migrate()  # rebuilds the indexes
    if store.db.kind == "sqlite":
        store.db.read("ANALYZE")
        store.db.read("PRAGMA synchronous=NORMAL")
    mid = now - SPAN / 2
    deep_i = n // 3
    deep_ts = (now - SPAN) + deep_i * (SPAN / n)
    return {"mid": f"{mid:.0f}", "mid_end": f"{mid + 3600:.0f}",
            "deep": f"{deep_ts!r}:{deep_i:08d}-0000-4000-8000-{deep_i:012d}",
            "some_id": f"{deep_i:08d}-0000-4000-8000-{deep_i:012d}"}




def measure(client: Any, values: dict[str, Any], repeat: int = 5) -> list[tuple[str, float]]:
    """Median milliseconds per page (after one warm-up request each)."""
    out = []
    for label, template in PAGES:
        path = template.format(**values)
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
        times = []
        for _ in range(repeat):
            began = time.perf_counter()
            client.get(path)
            times.append((time.perf_counter() - began) * 1000)
        out.append((label, statistics.median(times)))
    return out


def main() -> None:
    from starlette.testclient import TestClient

    from celeriac import Celery
    from celeriac.dashboard.config import DashboardConfig
    from celeriac.dashboard.server import Dashboard, create_app

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--history", default=None)
    parser.add_argument("--repeat", type=int, default=5)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        history = opts.history or f"sqlite:///{tmp}/history.sqlite3"
        app = Celery("bench", broker="memory://", backend="memory://")
        board = Dashboard.open(app, DashboardConfig.from_app(app, history_url=history))
        began = time.perf_counter()
        values = seed(board.history, opts.tasks)
        print(f"seeded {opts.tasks:,} tasks in {time.perf_counter() - began:.1f} s")
        with TestClient(create_app(board, start_ingestor=False)) as client:
            for label, ms in measure(client, values, opts.repeat):
                print(f"{label:32s} {ms:8.1f} ms")
        board.close()


if __name__ == "__main__":
    main()
