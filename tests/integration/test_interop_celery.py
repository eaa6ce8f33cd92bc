"""Interop with real Celery 5.7 on Redis, both directions, through real worker processes.

(a) A Celery client (in this process) sends to a ``celeriac worker -P threads``
subprocess; Celery's ``AsyncResult.get()`` reads the results.
(b) A celeriac client sends to a ``celery worker -P solo`` subprocess;
celeriac's ``AsyncResult.get()`` reads the results.

Both sides import a task module written into ``tmp_path`` (one built on
``celery``, one on ``celeriac``) that defines the same task names
(``interop.*``). Each test uses its own ``global_keyprefix`` for the broker
and the result store, so it needs no empty Redis and leaves nothing behind.
Celery is a test dependency only; celeriac never imports it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

from celeryproc import WorkerProcess, import_client, wait_until, worker_command
from needs import need

pytestmark = pytest.mark.redis

RESULT_TIMEOUT = 30.0

TASKS = '''\
"""Interop tasks on the {package} side; the other side defines the same names."""
import time

import redis
from {package} import Celery

URL, PREFIX = {url!r}, {prefix!r}
app = Celery({module!r}, broker=URL, backend=URL)
app.conf.broker_transport_options = {{"global_keyprefix": PREFIX, **{broker_extra!r}}}
app.conf.result_backend_transport_options = {{"global_keyprefix": PREFIX}}
app.conf.update({conf!r})
_redis = redis.Redis.from_url(URL)


@app.task(name="interop.add")
def add(x, y):
    return x + y


@app.task(name="interop.mul")
def mul(x, y):
    return x * y


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
        raise self.retry(countdown=0.2)
    return tries
'''


def write_tasks(tmp_path: Path, package: str, url: str, prefix: str,
                broker_extra: dict[str, Any] | None = None,
                conf: dict[str, Any] | None = None) -> str:
    """Write the ``package`` flavour of the task module; return its module name."""
    module = f"interop_{package}_tasks"
    (tmp_path / f"{module}.py").write_text(TASKS.format(
        package=package, url=url, prefix=prefix, module=module,
        broker_extra=broker_extra or {}, conf=conf or {}))
    return module


def send_priorities(tasks: ModuleType) -> None:
    """Low-priority messages first, then high ones (0 is served first on Redis)."""
    for i in range(3):
        tasks.order.apply_async((f"low{i}",), priority=9)
    for i in range(3):
        tasks.order.apply_async((f"high{i}",), priority=0)


def check_common(tasks: ModuleType, raw: redis.Redis, prefix: str,
                 in_broker: Callable[[], bool] | None) -> None:
    """delay, countdown (runs once, not early), priority order, retry, link."""
    assert tasks.add.delay(2, 2).get(timeout=RESULT_TIMEOUT) == 4

    sent = time.time()
    later = tasks.stamp.apply_async(("cd",), countdown=2)
    if in_broker is not None:  # the early-delivered Celery message is parked in Redis
        wait_until(in_broker, 10, what="the countdown message in the delayed set")
    ran_at = later.get(timeout=RESULT_TIMEOUT)
    assert ran_at >= sent + 2 - 0.05, f"ran {ran_at - sent:.3f}s after sending"

    assert tasks.flaky.delay("r1", 2).get(timeout=RESULT_TIMEOUT) == 3
    assert raw.get(prefix + "tries:r1") == b"3"

    callback = tasks.mul.s(10)
    callback_id = callback.freeze().id
    parent = tasks.add.apply_async((2, 3), link=callback)
    assert parent.get(timeout=RESULT_TIMEOUT) == 5
    assert tasks.add.AsyncResult(callback_id).get(timeout=RESULT_TIMEOUT) == 50

    assert [t.decode() for t in raw.lrange(prefix + "order", 0, -1)] == [
        "high0", "high1", "high2", "low0", "low1", "low2"]
    time.sleep(0.5)  # a duplicate of the countdown task would have run by now
    assert raw.get(prefix + "runs:cd") == b"1"


def test_celery_client_celeriac_worker(redis_url: str, key_prefix: str, raw: redis.Redis,
                                       tmp_path: Path) -> None:
    need("celery")
    write_tasks(tmp_path, "celeriac", redis_url, key_prefix,
                conf={"worker_lease_seconds": 10})
    client_module = write_tasks(tmp_path, "celery", redis_url, key_prefix)
    tasks = import_client(tmp_path, client_module)
    try:
        send_priorities(tasks)
        worker = WorkerProcess(
            [sys.executable, "-c", "from celeriac.cli import main; main()",
             "-A", "interop_celeriac_tasks", "worker", "-P", "threads", "-c", "1",
             "-l", "INFO"], tmp_path)
        try:
            delayed = key_prefix + "_celeriac.delayed.celery"
            check_common(tasks, raw, key_prefix, lambda: raw.zcard(delayed) == 1)
            assert raw.zcard(delayed) == 0
        finally:
            worker.stop()
        assert "Traceback" not in worker.log, worker.log
    finally:
        tasks.app.close()


def test_celeriac_client_celery_worker(redis_url: str, key_prefix: str, raw: redis.Redis,
                                       tmp_path: Path) -> None:
    need("celery")
    write_tasks(tmp_path, "celery", redis_url, key_prefix)
    # no option: by default celeriac publishes countdowns ready, with Celery's eta header,
    # so a Celery worker runs them (issue 9, point 8: a message is never stranded)
    client_module = write_tasks(tmp_path, "celeriac", redis_url, key_prefix)
    tasks = import_client(tmp_path, client_module)
    try:
        send_priorities(tasks)
        worker = WorkerProcess(worker_command("celery", "interop_celery_tasks"), tmp_path)
        try:
            check_common(tasks, raw, key_prefix, None)
        finally:
            worker.stop()
    finally:
        tasks.app.close()
