"""At-least-once order on Redis: no message is acknowledged before its result is stored.

A real worker (each pool: solo, prefork, threads, asyncio; the default adaptive
prefetch, so results are batched where the pool allows) drains short tasks
with results on Redis and is SIGKILLed (its whole process group) at arbitrary
moments. After every kill the test reads Redis directly: a task whose message
left the broker (acknowledged: in no ready list, lease or delayed set) must
have its SUCCESS result stored. Then a new worker finishes what is left.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import redis

from celeryproc import import_client, kill_group, start_worker_group

pytestmark = pytest.mark.redis

TASKS = '''\
"""Ack-order test tasks: short, with results."""
import random
import time

from celeriac import Celery

URL, PREFIX = {url!r}, {prefix!r}
app = Celery("ack_order_tasks", broker=URL, backend=URL)
app.conf.broker_transport_options = {{"global_keyprefix": PREFIX}}
app.conf.result_backend_transport_options = {{"global_keyprefix": PREFIX}}
# killed on purpose, many times; leases of a killed worker come back after 2 s
app.conf.update(worker_max_redeliveries=1000, worker_lease_seconds=2,
                worker_heartbeat_interval=0.5)


@app.task(name="ack_order.work")
def work(index):
    time.sleep(random.random() * 0.004)
    return index
'''

TOTAL = 600
KILLS = 3


@pytest.fixture
def tasks(tmp_path: Path, redis_url: str, key_prefix: str) -> Iterator[ModuleType]:
    (tmp_path / "ack_order_tasks.py").write_text(TASKS.format(url=redis_url, prefix=key_prefix))
    module = import_client(tmp_path, "ack_order_tasks")
    yield module
    module.app.close()


def start_worker(cwd: Path, pool: list[str]) -> subprocess.Popen[bytes]:
    return start_worker_group(cwd, "ack_order_tasks", *pool)


def in_broker(raw: redis.Redis, prefix: str) -> set[str]:
    """Task ids of every message still in the broker: ready, leased or delayed."""
    texts = [m for key in raw.scan_iter(match=f"{prefix}celery*", count=1000)
             if raw.type(key) == b"list" for m in raw.lrange(key, 0, -1)]
    for key in raw.scan_iter(match=f"{prefix}_celeriac.lease.*", count=1000):
        text = raw.hget(key, "m")
        if text is not None:
            texts.append(text)
    texts += [m[34:] for m in raw.zrange(f"{prefix}_celeriac.delayed.celery", 0, -1)]
    return {json.loads(text)["headers"]["id"] for text in texts}


def stored(raw: redis.Redis, prefix: str, ids: list[str]) -> set[str]:
    values = raw.mget([f"{prefix}celery-task-meta-{tid}" for tid in ids])
    return {tid for tid, value in zip(ids, values, strict=True)
            if value is not None and json.loads(value)["status"] == "SUCCESS"}


def results_count(raw: redis.Redis, prefix: str) -> int:
    return sum(1 for _ in raw.scan_iter(match=f"{prefix}celery-task-meta-*", count=1000))


@pytest.mark.parametrize("pool", [["-P", "solo"], ["-P", "prefork", "-c", "2"],
                                  ["-P", "threads", "-c", "3"], ["-P", "asyncio", "-c", "3"]],
                         ids=["solo", "prefork", "threads", "asyncio"])
def test_nothing_is_acknowledged_without_its_result_when_killed(
        tasks: ModuleType, raw: redis.Redis, key_prefix: str, tmp_path: Path,
        pool: list[str]) -> None:
    ids = [tasks.work.delay(i).id for i in range(TOTAL)]
    rng = random.Random(7)
    killed_in_flight = 0
    for _ in range(KILLS):
        before = results_count(raw, key_prefix)
        proc = start_worker(tmp_path, pool)
        deadline = time.monotonic() + 60
        while results_count(raw, key_prefix) <= before and time.monotonic() < deadline:
            assert proc.poll() is None, "the worker exited"
            time.sleep(0.005)
        time.sleep(rng.uniform(0.05, 0.5))  # working: a kill at an arbitrary moment
        kill_group(proc)
        left = in_broker(raw, key_prefix)
        acked = [tid for tid in ids if tid not in left]
        missing = set(acked) - stored(raw, key_prefix, acked)
        assert not missing, f"acknowledged without a stored result: {sorted(missing)[:5]}"
        if raw.zcard(f"{key_prefix}_celeriac.leases.celery"):
            killed_in_flight += 1
        if len(acked) == TOTAL:
            break
    assert killed_in_flight >= 1  # the kills did land while messages were held
    proc = start_worker(tmp_path, pool)  # the rest, after the lapsed leases come back
    try:
        deadline = time.monotonic() + 120
        while len(stored(raw, key_prefix, ids)) < TOTAL and time.monotonic() < deadline:
            assert proc.poll() is None, "the worker exited"
            time.sleep(0.1)
    finally:
        kill_group(proc)
    assert stored(raw, key_prefix, ids) == set(ids)
