"""``rate_limit`` holds across worker processes (issue 9, point 3): two real workers
(``-P threads -c 4`` each) share one bucket in the broker, on Redis and on SQLite.

Celery's own limit is per worker, so two Celery workers would run ``2/s`` at 4/s;
celeriac's runs the fleet at 2/s. Each run appends its start time to a file; the
test checks no one-second window holds more than the bucket allows (2 refills plus
the one token it starts with), every task ran exactly once, and the backlog waited
in the broker (delayed), never in the workers.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from workerproc import Project, project, read_lines, wait_until

TASKS = 6
RATE = 2.0
SOURCE = '''
import os, time
from celeriac import Celery

app = Celery("proj")
app.conf.broker_transport_options = {"global_keyprefix": os.environ.get("PREFIX", "")}
app.conf.result_backend_transport_options = {"global_keyprefix": os.environ.get("PREFIX", "")}

@app.task(name="proj.limited", rate_limit="2/s")
def limited(i):
    with open(os.path.join(os.path.dirname(__file__), "starts.txt"), "a") as f:
        f.write(f"{i} {time.time()}\\n")
'''


def check_fleet_rate(proj: Project) -> None:
    for i in range(TASKS):
        proj.client().limited.delay(i)
    delayed: list[int] = []
    starts = proj.path / "starts.txt"
    done = threading.Event()

    def sample() -> None:  # from before the workers start: the first may finish alone
        while not done.is_set():
            delayed.append(proj.app.broker.stats("celery").delayed)
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with proj.worker(concurrency=4), proj.worker(concurrency=4):
            wait_until(lambda: len(read_lines(starts)) >= TASKS, timeout=60,
                       what="every task run")
            time.sleep(0.5)  # nothing runs twice afterwards
    finally:
        done.set()
        sampler.join(10)
    lines = [line.split() for line in read_lines(starts)]
    assert sorted(int(i) for i, _ in lines) == list(range(TASKS))
    times = sorted(float(t) for _, t in lines)
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= RATE + 1, times
    assert times[-1] - times[0] >= (TASKS - 1 - 1) / RATE - 0.25, times
    assert max(delayed) > 0  # the backlog waited in the broker


def test_rate_limit_holds_across_two_workers_on_sqlite(tmp_path: Path) -> None:
    with project(tmp_path, SOURCE) as proj:
        check_fleet_rate(proj)


@pytest.mark.redis
def test_rate_limit_holds_across_two_workers_on_redis(tmp_path: Path, redis_url: str,
                                                      key_prefix: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFIX", key_prefix)
    with project(tmp_path, SOURCE, broker_url=redis_url) as proj:
        check_fleet_rate(proj)
