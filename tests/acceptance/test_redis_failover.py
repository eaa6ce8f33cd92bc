"""Failover under load: a Redis master is SIGKILLed, a replica takes over, nothing promised is lost.

Two deployments, each private to the test (``tests/redisnodes.py``): a Redis
Cluster of 3 masters + 3 replicas (the master serving the ``celery`` queue's slot
is killed; the cluster promotes its replica) and Sentinel with one master, one
replica and one sentinel (the master is killed; the sentinel promotes the replica).

A ``celeriac worker`` subprocess (threads) consumes throughout. Every run of the
task is recorded on the shared Redis (port 6379), outside the system under test.

* Phase A, before the kill: a producer with ``wait_for_replicas: 1`` publishes; a
  ``delay()`` that returned has its message on a replica, which is what that
  durability mode promises. Every such task must run at least once.
* The master is killed with ``kill -9``.
* Phase B: a producer without the option publishes through the failover (its
  ``delay()`` retries by ``task_publish_retry_policy`` until the new master takes
  the message), then reads a result back with ``get()``.

Figures printed: seconds from the kill to the first publish accepted and to the
first task completed, runs lost (must be 0) and runs duplicated (allowed: a task
whose ack the dead master never replicated runs again).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from celeryproc import start_worker_group

pytestmark = [pytest.mark.redis, pytest.mark.skipif(sys.platform == "win32", reason="POSIX")]

TASKS = '''
import time

import redis
from celeriac import Celery

app = Celery("failover_tasks", broker={url!r}, backend={url!r})
app.conf.broker_transport_options = {options!r}
app.conf.result_backend_transport_options = {options!r}
app.conf.update(worker_lease_seconds=5, worker_heartbeat_interval=1,
                worker_max_redeliveries=1000, broker_publish_timeout=60,
                task_publish_retry_policy={{"max_retries": 60, "interval_start": 0.1,
                                            "interval_step": 0.2, "interval_max": 0.5}})
_record = redis.Redis.from_url({record_url!r})


@app.task(name="failover.record")
def record(label):
    time.sleep(0.05)  # slower than the producer: a backlog is queued at the kill
    _record.rpush({record_key!r}, label)
    return label
'''
PHASE_A, PHASE_B = 150, 50
DEADLINE = 90.0


def write_tasks(tmp: Path, url: str, options: dict[str, Any], record_url: str,
                record_key: str) -> Any:
    import importlib.util

    module = f"failover_tasks_{uuid.uuid4().hex[:8]}"
    path = tmp / f"{module}.py"
    path.write_text(textwrap.dedent(TASKS.format(url=url, options=options,
                                                 record_url=record_url,
                                                 record_key=record_key)))
    spec = importlib.util.spec_from_file_location(module, path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def start_worker(cwd: Path, module: str) -> subprocess.Popen[bytes]:
    return start_worker_group(cwd, module, "-P", "threads", "-c", "4", log="worker.log")


def run_failover(tmp: Path, url: str, options: dict[str, Any], kill: Callable[[], None],
                 redis_url: str, key_prefix: str) -> dict[str, Any]:
    import redis

    record_key = key_prefix + "runs"
    safe = write_tasks(tmp, url, {**options, "wait_for_replicas": 1,
                                  "wait_for_replicas_timeout": 2.0}, redis_url, record_key)
    plain = write_tasks(tmp, url, options, redis_url, record_key)
    records = redis.Redis.from_url(redis_url)
    worker = start_worker(tmp, plain.__name__)
    try:
        promised = []
        for i in range(PHASE_A):
            safe.record.delay(f"a{i}")  # returned: on the master and one replica
            promised.append(f"a{i}")
            time.sleep(0.005)
        killed_at = time.monotonic()
        kill()
        first_publish = None
        for i in range(PHASE_B):
            plain.record.delay(f"b{i}")  # retries through the failover
            promised.append(f"b{i}")
            first_publish = first_publish or time.monotonic() - killed_at
        last = plain.record.delay("c0")
        try:
            assert last.get(timeout=60) == "c0"  # the result store is back too
        except Exception:
            log = (tmp / "worker.log").read_text(errors="replace").splitlines()
            print("stored:", plain.app.backend.get(last.id), "last runs:",
                  records.lrange(record_key, -5, -1), "worker log:", *log[-30:], sep="\n")
            raise
        promised.append("c0")
        first_run = None
        while True:
            runs = [x.decode() for x in records.lrange(record_key, 0, -1)]
            if first_run is None and any(r.startswith(("b", "c")) for r in runs):
                first_run = time.monotonic() - killed_at
            if set(promised) <= set(runs):
                break
            assert time.monotonic() - killed_at < DEADLINE, (
                f"still missing after {DEADLINE}s: {sorted(set(promised) - set(runs))[:20]}")
            time.sleep(0.2)
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
        records.delete(record_key)
        safe.app.close()
        plain.app.close()
    lost = sorted(set(promised) - set(runs))
    duplicated = len(runs) - len(set(runs))
    return {"lost": lost, "duplicated": duplicated, "first_publish": first_publish,
            "first_run": first_run, "promised": len(promised)}


@pytest.fixture
def private_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import redisnodes

    cluster = redisnodes.start_cluster(tmp_path_factory.mktemp("failover-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import redisnodes

    setup = redisnodes.start_sentinels(tmp_path_factory.mktemp("failover-sentinel"), 1)
    yield setup
    setup.stop()


def check(name: str, figures: dict[str, Any]) -> None:
    print(f"\n{name} failover: {figures['promised']} tasks promised, {len(figures['lost'])} "
          f"lost, {figures['duplicated']} run twice; first publish accepted "
          f"{figures['first_publish']:.1f}s and first task run {figures['first_run']:.1f}s "
          "after the kill")
    assert figures["lost"] == []


def test_cluster_master_killed_loses_nothing_promised(
        private_cluster: Any, tmp_path: Path, redis_url: str, key_prefix: str) -> None:
    victim = private_cluster.master_of_key("celery")  # the queue's slot lives there

    def kill() -> None:
        private_cluster.kill(victim)

    figures = run_failover(tmp_path, private_cluster.url, {"global_keyprefix": key_prefix},
                           kill, redis_url, key_prefix)
    check("Redis Cluster", figures)
    assert private_cluster.master_of_key("celery") != victim


def test_sentinel_master_killed_loses_nothing_promised(
        sentinels: Any, tmp_path: Path, redis_url: str, key_prefix: str) -> None:
    victim = sentinels.master_port

    def kill() -> None:
        sentinels.kill(victim)

    figures = run_failover(tmp_path, sentinels.url, {"master_name": sentinels.master_name,
                                                     "global_keyprefix": key_prefix},
                           kill, redis_url, key_prefix)
    check("Sentinel", figures)
    assert sentinels.current_master() == sentinels.replica_port
