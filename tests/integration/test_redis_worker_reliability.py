"""kill -9 on Redis: celeriac workers killed every 2 s lose nothing; leases outlive long tasks.

A worker subprocess (``-P threads -c 4``, or ``-P prefork -c 2``; lease 3 s,
heartbeat 1 s) drains 2,000 short tasks (1-20 ms) while the test SIGKILLs its
whole process group 2 s after it started working (a crashed or OOM-killed
container) and starts a new one. Every completed execution is recorded in Redis (``RPUSH`` of
``"<task>:<worker process group>"`` under the test's key prefix). Verified: every task ran to
completion at least once, and a task ran more than once only if an earlier
run was in a worker that was then killed (it was in flight at a kill: ran,
but its ack never reached Redis). The second test runs a 10 s task with a
3 s lease under two workers and checks it runs exactly once.
"""

from __future__ import annotations

import collections
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import redis

from celeryproc import import_client, kill_group, start_worker_group

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TASKS = '''\
"""Reliability-test tasks: each completed run is recorded in Redis."""
import os
import time

from celeriac import Celery
from celeriac.brokers.redis.client import get_client

URL, PREFIX = {url!r}, {prefix!r}
app = Celery("reliability_tasks", broker=URL)
app.conf.broker_transport_options = {{"global_keyprefix": PREFIX}}
app.conf.update(worker_lease_seconds=3, worker_heartbeat_interval=1,
                # the poison-message guard would dead-letter a message lost 3 times;
                # this test kills workers on purpose, so it is set out of reach
                worker_max_redeliveries=1000, task_acks_late=True)
_redis = get_client(URL)  # one Redis or a Redis Cluster


@app.task(name="reliability.work")
def work(index, ms):
    time.sleep(ms / 1000.0)
    _redis.rpush(PREFIX + "runs", f"{{index}}:{{os.getpgid(0)}}")


@app.task(name="reliability.long")
def long(seconds):
    _redis.incr(PREFIX + "long-starts")
    time.sleep(seconds)
    _redis.incr(PREFIX + "long-runs")
'''

TOTAL = 2000
KILL_EVERY = 2.0
DEADLINE = 180.0


@pytest.fixture
def target(request: pytest.FixtureRequest) -> tuple[str, str]:
    """``(url, key prefix)``: the shared Redis, or the session's local Redis Cluster."""
    if getattr(request, "param", "redis") == "redis-cluster":
        return (request.getfixturevalue("redis_cluster_url"),
                request.getfixturevalue("cluster_key_prefix"))
    return request.getfixturevalue("redis_url"), request.getfixturevalue("key_prefix")


@pytest.fixture
def raw(target: tuple[str, str]) -> Iterator[redis.Redis]:
    from celeriac.brokers.redis.client import get_client

    yield get_client(target[0])


@pytest.fixture
def prefix(target: tuple[str, str]) -> str:
    """The target's key prefix (a fixture of its own: ``target`` asks for ``key_prefix``)."""
    return target[1]


@pytest.fixture
def tasks(tmp_path: Path, target: tuple[str, str]) -> Iterator[ModuleType]:
    (tmp_path / "reliability_tasks.py").write_text(TASKS.format(url=target[0], prefix=target[1]))
    module = import_client(tmp_path, "reliability_tasks")
    yield module
    module.app.close()


def start_worker(cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    return start_worker_group(cwd, "reliability_tasks", *args)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
    kill_group(proc)  # whatever is left of the group


def unsettled(tasks: ModuleType) -> int:
    stats = tasks.app.broker.stats("celery")
    return int(stats.ready + stats.delayed + stats.leased)


def runs_by_task(raw: redis.Redis, prefix: str) -> dict[int, list[int]]:
    out: dict[int, list[int]] = collections.defaultdict(list)
    for item in raw.lrange(prefix + "runs", 0, -1):
        index, pid = item.decode().split(":")
        out[int(index)].append(int(pid))
    return out


@pytest.mark.parametrize("target", ["redis", "redis-cluster"], indirect=True)
@pytest.mark.parametrize("pool", [["-P", "threads", "-c", "4"], ["-P", "prefork", "-c", "2"]],
                         ids=["threads", "prefork"])
def test_kill_9_every_two_seconds_loses_nothing(tasks: ModuleType, raw: redis.Redis,
                                               prefix: str, tmp_path: Path,
                                               pool: list[str]) -> None:
    for i in range(TOTAL):
        tasks.work.delay(i, 1 + i % 20)
    killed: set[int] = set()
    worker = start_worker(tmp_path, *pool)
    started = time.monotonic()
    try:
        while raw.llen(prefix + "runs") < TOTAL or len(runs_by_task(raw, prefix)) < TOTAL:
            # each worker is killed 2 s after it ran its first task: on a loaded machine a
            # worker can take longer than that to start, and killing it on a fixed clock
            # would then kill every worker before it ran anything
            ran_before = raw.llen(prefix + "runs")
            while raw.llen(prefix + "runs") == ran_before:
                assert time.monotonic() - started < DEADLINE, "tasks still missing after deadline"
                assert worker.poll() is None, "the worker exited"
                time.sleep(0.05)
            time.sleep(KILL_EVERY)
            if len(runs_by_task(raw, prefix)) >= TOTAL:
                break
            kill_group(worker)  # SIGKILL: no shutdown code runs anywhere
            killed.add(worker.pid)
            worker = start_worker(tmp_path, *pool)
        # messages a killed worker ran but never acknowledged come back when their
        # leases lapse: let the last worker run them (allowed duplicates) and settle all
        while unsettled(tasks):
            assert time.monotonic() - started < DEADLINE, "queue never settled"
            time.sleep(0.2)
    finally:
        stop(worker)
    runs = runs_by_task(raw, prefix)
    lost = [i for i in range(TOTAL) if not runs.get(i)]
    duplicated = {i: pids for i, pids in runs.items() if len(pids) > 1}
    unexplained = {i: pids for i, pids in duplicated.items()
                   if not any(pid in killed for pid in pids[:-1])}
    engine = tasks.URL.split(":")[0]
    print(f"\nkill -9 on {engine} ({pool[1]}): {len(killed)} kills, {TOTAL} tasks, "
          f"{len(lost)} lost, "
          f"{len(duplicated)} run twice (all in flight at a kill: {not unexplained}), "
          f"{time.monotonic() - started:.1f}s")
    assert len(killed) >= 2, "the workers finished before enough kills to mean anything"
    assert lost == []
    assert unexplained == {}
    stats = tasks.app.broker.stats("celery")
    assert (stats.ready, stats.delayed, stats.dead) == (0, 0, 0)


def test_long_task_keeps_its_lease_and_runs_once(tasks: ModuleType, raw: redis.Redis,
                                                 prefix: str, tmp_path: Path) -> None:
    workers = [start_worker(tmp_path, "-P", "threads", "-c", "2") for _ in range(2)]
    try:
        tasks.long.delay(10)
        deadline = time.monotonic() + 60
        while raw.get(prefix + "long-runs") is None:
            assert time.monotonic() < deadline, "the long task never finished"
            assert all(w.poll() is None for w in workers), "a worker died"
            time.sleep(0.2)
        time.sleep(3.5)  # past one more lease period: a lapsed lease would show up now
    finally:
        for worker in workers:
            stop(worker)
    assert raw.get(prefix + "long-starts") == b"1"
    assert raw.get(prefix + "long-runs") == b"1"
