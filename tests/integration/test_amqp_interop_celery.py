"""Interop with real Celery 5.7 on RabbitMQ, both directions, through real worker processes.

(a) A Celery client (in this process) sends to a ``celeriac worker`` subprocess;
Celery's ``AsyncResult.get()`` reads the results. (b) A celeriac client sends to
a ``celery worker -P solo`` subprocess; celeriac's ``AsyncResult.get()`` reads
them. Results go through Redis (a key prefix of the test's own); messages
through a RabbitMQ vhost of the test's own. Both sides declare the ``celery``
queue with ``x-max-priority`` 9 (``task_queue_max_priority``), so neither
declaration is refused. Covered: ``delay``, ``countdown`` (runs once, not
early: Celery's classic-queue countdown arrives at once with its ``eta`` and
the celeriac worker parks it in RabbitMQ's delay layout; celeriac's countdown
waits in that layout and reaches the Celery worker when due), priorities
(urgent first on both: the AMQP priority is inverted), a retrying task,
``link=`` callbacks and a chord.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

from celeryproc import CONFIG_ENV, WorkerProcess, import_client, wait_until, worker_command

pytestmark = pytest.mark.redis

RESULT_TIMEOUT = 45.0

TASKS = '''\
"""Interop tasks on the {package} side; the other side defines the same names."""
import time

import redis
from {package} import Celery

app = Celery({module!r}, broker={broker!r}, backend={backend!r})
app.conf.result_backend_transport_options = {{"global_keyprefix": {prefix!r}}}
app.conf.task_queue_max_priority = 9
_redis = redis.Redis.from_url({redis!r})
PREFIX = {prefix!r}


@app.task(name="interop.add")
def add(x, y):
    return x + y


@app.task(name="interop.mul")
def mul(x, y):
    return x * y


@app.task(name="interop.total")
def total(values):
    return sum(values)


@app.task(name="interop.stamp")
def stamp(tag):
    _redis.incr(PREFIX + "runs:" + tag)
    return time.time()


@app.task(name="interop.order")
def order(tag):
    _redis.rpush(PREFIX + "order", tag)
    return tag


@app.task(bind=True, name="interop.flaky", max_retries=5)
def flaky(self, tag, failures):
    tries = _redis.incr(PREFIX + "tries:" + tag)
    if tries <= failures:
        raise self.retry(countdown=1)
    return tries
'''


def write_tasks(tmp_path: Path, package: str, broker: str, backend: str, prefix: str,
                redis_url: str | None = None) -> str:
    """The tasks module; the tasks' own bookkeeping is in ``redis_url`` (default: backend)."""
    module = f"interop_amqp_{package}_tasks"
    (tmp_path / f"{module}.py").write_text(TASKS.format(
        package=package, module=module, broker=broker, backend=backend, prefix=prefix,
        redis=redis_url or backend))
    return module


def send_priorities(tasks: ModuleType, urgent: int, low: int) -> None:
    for i in range(3):
        tasks.order.apply_async((f"low{i}",), priority=low)
    for i in range(3):
        tasks.order.apply_async((f"high{i}",), priority=urgent)


def check_common(tasks: ModuleType, raw: redis.Redis, prefix: str) -> None:
    assert tasks.add.delay(2, 2).get(timeout=RESULT_TIMEOUT) == 4
    assert [t.decode() for t in raw.lrange(prefix + "order", 0, -1)] == [
        "high0", "high1", "high2", "low0", "low1", "low2"]

    sent = time.time()
    later = tasks.stamp.apply_async(("cd",), countdown=2)
    ran_at = later.get(timeout=RESULT_TIMEOUT)
    assert ran_at >= sent + 2 - 0.05, f"ran {ran_at - sent:.3f}s after sending"

    assert tasks.flaky.delay("r1", 2).get(timeout=RESULT_TIMEOUT) == 3
    assert raw.get(prefix + "tries:r1") == b"3"

    callback = tasks.mul.s(10)
    callback_id = callback.freeze().id
    parent = tasks.add.apply_async((2, 3), link=callback)
    assert parent.get(timeout=RESULT_TIMEOUT) == 5
    assert tasks.add.AsyncResult(callback_id).get(timeout=RESULT_TIMEOUT) == 50

    body = tasks.app.signature("interop.total")
    header = [tasks.add.s(i, i) for i in range(4)]
    assert tasks.chord_factory(header)(body).get(timeout=RESULT_TIMEOUT) == 12

    time.sleep(0.5)  # a duplicate of the countdown task would have run by now
    assert raw.get(prefix + "runs:cd") == b"1"


def check_chord_member_done_before_size(tasks: ModuleType, raw: redis.Redis,
                                        prefix: str) -> None:
    """A Celery client stores a chord's size (``.s``) only just before it publishes the
    last header task: hold the publish of the one before it until the first member was
    joined by the worker, so that member surely ran while the size was unknown."""
    from celery.signals import before_task_publish

    size = 4
    seen: dict[int, str] = {}

    def hold(headers: dict[str, Any] | None = None, **_: Any) -> None:
        index = (headers or {}).get("group_index")
        if headers is None or index is None:
            return
        seen[index] = str(headers["group"])
        if index == size - 2:
            joined = f"{prefix}celery-taskset-meta-{seen[index]}.j"
            assert raw.get(f"{prefix}celery-taskset-meta-{seen[index]}.s") is None
            wait_until(lambda: raw.zcard(joined) >= 1, RESULT_TIMEOUT,
                       what="the first header member to be joined before the size is known")

    before_task_publish.connect(hold, weak=False)
    try:
        body = tasks.app.signature("interop.total")
        header = [tasks.add.s(i, i) for i in range(size)]
        assert tasks.chord_factory(header)(body).get(timeout=RESULT_TIMEOUT) == 12
    finally:
        before_task_publish.disconnect(hold)
    assert len(seen) == size


def _client(tmp_path: Path, package: str, rabbitmq_url: str, redis_url: str,
            prefix: str, backend: str | None = None) -> ModuleType:
    tasks = import_client(tmp_path, write_tasks(tmp_path, package, rabbitmq_url,
                                                backend or redis_url, prefix, redis_url))
    canvas = __import__(package, fromlist=["chord"])
    tasks.chord_factory = canvas.chord  # type: ignore[attr-defined]
    return tasks


def test_celery_client_celeriac_worker(rabbitmq_url: str, redis_url: str, key_prefix: str,
                                       raw: redis.Redis, tmp_path: Path) -> None:
    pytest.importorskip("celery")
    write_tasks(tmp_path, "celeriac", rabbitmq_url, redis_url, key_prefix)
    tasks = _client(tmp_path, "celery", rabbitmq_url, redis_url, key_prefix)
    try:
        send_priorities(tasks, urgent=9, low=0)  # Celery on RabbitMQ: 9 is urgent
        worker = WorkerProcess(worker_command("celeriac", "interop_amqp_celeriac_tasks"),
                               tmp_path, drop_env=CONFIG_ENV)
        try:
            # a Celery client's chord: Celery stores its size (Redis `.s` key) just before
            # it publishes the last header task; the join reads it atomically
            check_common(tasks, raw, key_prefix)
            check_chord_member_done_before_size(tasks, raw, key_prefix)
        finally:
            worker.stop()
        assert "Traceback" not in worker.log, worker.log
    finally:
        tasks.app.close()


def test_celeriac_client_celery_worker(rabbitmq_url: str, redis_url: str, key_prefix: str,
                                       raw: redis.Redis, tmp_path: Path) -> None:
    pytest.importorskip("celery")
    write_tasks(tmp_path, "celery", rabbitmq_url, redis_url, key_prefix)
    tasks = _client(tmp_path, "celeriac", rabbitmq_url, redis_url, key_prefix)
    try:
        send_priorities(tasks, urgent=0, low=9)  # celeriac: 0 is urgent, on every broker
        worker = WorkerProcess(worker_command("celery", "interop_amqp_celery_tasks"),
                               tmp_path, drop_env=CONFIG_ENV)
        try:
            check_common(tasks, raw, key_prefix)
        finally:
            worker.stop()
    finally:
        tasks.app.close()


def check_rpc(tasks: ModuleType, raw: redis.Redis, prefix: str) -> None:
    """Results through ``rpc://``: the caller's reply queue, ``get()`` blocking on it."""
    results = [tasks.add.delay(i, i) for i in range(5)]
    assert [r.get(timeout=RESULT_TIMEOUT) for r in reversed(results)] == [8, 6, 4, 2, 0]
    sent = time.time()
    assert tasks.stamp.apply_async(("rpc-cd",), countdown=1).get(
        timeout=RESULT_TIMEOUT) >= sent + 1 - 0.05
    assert tasks.flaky.delay("rpc-r", 1).get(timeout=RESULT_TIMEOUT) == 2
    failing = tasks.add.delay(1, None)
    with pytest.raises(TypeError):
        failing.get(timeout=RESULT_TIMEOUT)
    assert failing.state == "FAILURE"


@pytest.mark.parametrize("worker_side", ["celeriac", "celery"])
def test_rpc_results_with_the_other_side(worker_side: str, rabbitmq_url: str, redis_url: str,
                                         key_prefix: str, raw: redis.Redis,
                                         tmp_path: Path) -> None:
    """A client of one kind reads ``rpc://`` results sent by a worker of the other kind."""
    pytest.importorskip("celery")
    client_side = "celery" if worker_side == "celeriac" else "celeriac"
    module = write_tasks(tmp_path, worker_side, rabbitmq_url, "rpc://", key_prefix, redis_url)
    tasks = _client(tmp_path, client_side, rabbitmq_url, redis_url, key_prefix, "rpc://")
    command = worker_command(worker_side, module, concurrency=2, name="rpc")
    try:
        worker = WorkerProcess(command, tmp_path, drop_env=CONFIG_ENV)
        try:
            check_rpc(tasks, raw, key_prefix)
        except Exception as exc:  # the worker's side of the story
            worker.stop()
            raise AssertionError(f"{exc!r}; the {worker_side} worker's log:\n"
                                 f"{worker.log[-6000:]}") from exc
        finally:
            worker.stop()
        assert worker.log.count("Traceback") <= 1, worker.log  # the failing add only
    finally:
        tasks.app.close()
