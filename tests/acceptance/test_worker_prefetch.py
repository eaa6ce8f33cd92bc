"""The default (adaptive) prefetch on real worker processes (embedded SQLite broker).

A 10 s task on a 2-slot worker does not hold back 100 short ones leased with it:
they all finish while it still runs (the long task ends early only when the test
releases it, after checking). A drain of no-ops is leased in batches, which the
worker's ``inspect stats`` counters show (not timing). An explicit
``--prefetch-multiplier 1`` turns batching off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from workerproc import project, wait_until

SOURCE = """
    import os
    import time
    from celeriac import Celery

    app = Celery("proj", broker=os.environ.get("PREFETCH_BROKER") or None,
                 backend=os.environ.get("PREFETCH_BACKEND") or None)

    @app.task
    def noop(i=0):
        return i

    @app.task
    def long(release):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not os.path.exists(release):
            time.sleep(0.05)
        return "long"
"""


def _prefetch(app: Any) -> dict[str, Any]:
    stats = wait_until(lambda: app.control.inspect(timeout=2).stats(), 30, what="stats")
    return dict(next(iter(stats.values()))["prefetch"])


@pytest.fixture
def broker(request: pytest.FixtureRequest, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> str:
    """The broker of the project: the embedded SQLite (default) or RabbitMQ, whose
    prefetch window is pushed by the server (results in SQLite)."""
    name = getattr(request, "param", "sqlite")
    if name == "amqp":
        url = request.getfixturevalue("rabbitmq_url")
        monkeypatch.setenv("PREFETCH_BROKER", url)
        monkeypatch.setenv("PREFETCH_BACKEND", f"sqlite:///{tmp_path / 'results.sqlite3'}")
    return str(name)


@pytest.mark.parametrize(("pool", "broker"), [("prefork", "sqlite"), ("threads", "sqlite"),
                                              ("prefork", "amqp")], indirect=["broker"])
def test_a_long_task_does_not_hold_back_short_ones(tmp_path: Path, pool: str,
                                                   broker: str) -> None:
    release = tmp_path / "release-long"
    with project(tmp_path, SOURCE) as proj, \
            proj.worker("-n", f"pf-{pool}@%h", pool=pool, concurrency=2):
        client = proj.client()
        warm = [client.noop.delay(i) for i in range(200)]  # the worker learns: tasks are short
        wait_until(lambda: all(r.ready() for r in warm), 60, what="the warm-up")
        long = client.long.delay(str(release))
        short = [client.noop.delay(i) for i in range(100)]
        try:
            wait_until(lambda: all(r.ready() for r in short), 60, what="the short tasks")
            assert not long.ready()  # every short one done while the 10 s task still runs
        finally:
            release.touch()
        assert long.get(timeout=30) == "long"
        assert [r.get(timeout=5) for r in short] == list(range(100))
        prefetch = _prefetch(proj.app)
        assert prefetch["rule"] == "adaptive"
        assert prefetch["batched_requests"] >= 1 and prefetch["largest_request"] > 2


def test_a_drain_of_no_ops_is_leased_in_batches(tmp_path: Path) -> None:
    with project(tmp_path, SOURCE) as proj:
        client = proj.client()
        results = [client.noop.delay(i) for i in range(500)]
        with proj.worker("-n", "drain@%h", pool="prefork", concurrency=2):
            wait_until(lambda: all(r.ready() for r in results), 120, what="the drain")
            prefetch = _prefetch(proj.app)
        assert prefetch["rule"] == "adaptive" and prefetch["budget"] == 0.1
        assert prefetch["received"] >= 500
        assert prefetch["batched_requests"] >= 1
        assert prefetch["largest_request"] > 2  # more than the free slot of a child
        assert prefetch["lease_requests"] < 500  # fewer lease requests than tasks


def test_an_explicit_multiplier_of_one_leases_only_for_free_slots(tmp_path: Path) -> None:
    with project(tmp_path, SOURCE) as proj:
        client = proj.client()
        results = [client.noop.delay(i) for i in range(100)]
        with proj.worker("-n", "fixed@%h", "--prefetch-multiplier", "1", pool="prefork",
                         concurrency=2):
            wait_until(lambda: all(r.ready() for r in results), 120, what="the drain")
            prefetch = _prefetch(proj.app)
        assert prefetch["rule"] == "fixed" and prefetch["extra"] == 0
        assert prefetch["batched_requests"] == 0 and prefetch["largest_request"] == 1
