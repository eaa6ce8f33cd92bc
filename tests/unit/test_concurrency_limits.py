"""Concurrency limits, serial_task and unique calls on the memory broker, in-process
consumers (threads and asyncio pools): what runs, what waits, what is dropped."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from celeriac import Celery, states
from celeriac.exceptions import CouldNotAcquireLock, ImproperlyConfigured, TaskRevokedError
from celeriac.worker.aio import AsyncioPool
from celeriac.worker.consumer import Consumer
from celeriac.worker.pools import ThreadPool
from celeryproc import wait_until


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("limits", broker="memory://", backend="memory://", set_as_current=False)
    yield app


class Spans:
    """Start/end times of runs, per key, to check that no two overlap."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[tuple[str, float, float]] = []
        self.running: dict[str, int] = {}
        self.most: dict[str, int] = {}

    def run(self, key: str, seconds: float) -> None:
        with self.lock:
            self.running[key] = self.running.get(key, 0) + 1
            self.most[key] = max(self.most.get(key, 0), self.running[key])
        start = time.monotonic()
        time.sleep(seconds)
        with self.lock:
            self.running[key] -= 1
            self.spans.append((key, start, time.monotonic()))


def test_requeue_limit_of_two_per_key(app: Celery, consume: Callable[..., Consumer]) -> None:
    spans = Spans()

    @app.task(name="t.limited", concurrency_limit=2, concurrency_key="{0}",
              busy_countdown=0.05)
    def limited(key: str, n: int) -> int:
        spans.run(key, 0.05)
        return n

    consume(app, ThreadPool(8))
    results = [limited.delay(key, n) for n in range(8) for key in ("a", "b")]
    assert sorted(r.get(timeout=30) for r in results) == sorted(list(range(8)) * 2)
    assert spans.most == {"a": 2, "b": 2}
    assert app.broker.slot_holders() == []  # every slot given back


def test_serial_task_retries_then_fails_with_could_not_acquire_lock(
        app: Celery, consume: Callable[..., Consumer]) -> None:
    from celeriac.task import serial_task

    gate = threading.Event()
    app.set_current()

    @serial_task("{0}", default_retry_delay=0.05, max_retries=2, ignore_result=False,
                 name="t.serial")
    def serial(key: str) -> str:
        gate.wait(15)
        return key

    consume(app, ThreadPool(2))
    first = serial.delay("k")
    wait_until(lambda: app.broker.slot_holders("t.serial:k"), 15.0)
    second = serial.delay("k")
    with pytest.raises(CouldNotAcquireLock, match=r"t\.serial:k"):
        second.get(timeout=30)
    assert second.state == states.FAILURE
    gate.set()
    assert first.get(timeout=30) == "k"
    assert serial.delay("k").get(timeout=30) == "k"  # the lock was released


def test_skip_drops_a_busy_call(app: Celery, consume: Callable[..., Consumer]) -> None:
    gate = threading.Event()

    @app.task(name="t.skip", concurrency_limit=1, on_busy="skip")
    def skip() -> str:
        gate.wait(15)
        return "ran"

    consume(app, ThreadPool(2))
    first = skip.delay()
    wait_until(lambda: app.broker.slot_holders("t.skip"), 15.0)
    second = skip.delay()
    with pytest.raises(TaskRevokedError, match="skipped"):
        second.get(timeout=30)
    gate.set()
    assert first.get(timeout=30) == "ran"


def test_async_tasks_are_limited_too(app: Celery, consume: Callable[..., Consumer]) -> None:
    spans = Spans()

    @app.task(name="t.async", concurrency_limit=1, busy_countdown=0.02)
    async def job(n: int) -> int:
        with spans.lock:
            spans.running["x"] = spans.running.get("x", 0) + 1
            spans.most["x"] = max(spans.most.get("x", 0), spans.running["x"])
        await asyncio.sleep(0.03)
        with spans.lock:
            spans.running["x"] -= 1
        return n

    consume(app, AsyncioPool(4))
    results = [job.delay(n) for n in range(6)]
    assert sorted(r.get(timeout=30) for r in results) == list(range(6))
    assert spans.most == {"x": 1}


def test_a_key_that_does_not_fit_fails_the_task(app: Celery,
                                                 consume: Callable[..., Consumer]) -> None:
    @app.task(name="t.badkey", concurrency_limit=1, concurrency_key="{domain}")
    def badkey(x: int) -> int:
        return x

    consume(app, ThreadPool(1))
    with pytest.raises(ValueError, match="concurrency_key"):
        badkey.delay(1).get(timeout=30)


def test_unique_for_drops_duplicates_within_the_window(app: Celery) -> None:
    @app.task(name="t.unique", unique_for=0.5, unique_key="{0}")
    def unique(key: str, extra: int = 0) -> str:
        return key

    first = unique.delay("a")
    duplicate = unique.delay("a", extra=1)
    other = unique.delay("b")
    assert duplicate.id == first.id
    assert other.id != first.id
    assert app.broker.stats("celery").ready == 2
    time.sleep(0.7)
    assert unique.delay("a").id != first.id
    assert app.broker.stats("celery").ready == 3


def test_unique_default_key_is_the_arguments(app: Celery) -> None:
    @app.task(name="t.unique2", unique_for=60)
    def unique2(x: int, y: int = 0) -> int:
        return x

    assert unique2.delay(1).id == unique2.delay(1).id
    assert unique2.delay(1).id != unique2.delay(1, y=2).id


def test_a_failed_publish_gives_the_claim_back(app: Celery, monkeypatch: Any) -> None:
    @app.task(name="t.unique3", unique_for=60)
    def unique3() -> None:
        return None

    def fail(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("down")

    monkeypatch.setattr(app.broker, "publish", fail)
    monkeypatch.setattr(app.broker, "publish_many", fail)
    with pytest.raises(Exception, match="down"):
        unique3.delay()
    monkeypatch.undo()
    unique3.delay()
    assert app.broker.stats("celery").ready == 1


@pytest.mark.parametrize(("options", "match"), [
    ({"concurrency_limit": 0}, "concurrency_limit"),
    ({"concurrency_limit": 1, "on_busy": "wait"}, "on_busy"),
    ({"concurrency_limit": 1, "acks_late": False}, "acks_late"),
    ({"concurrency_limit": 1, "concurrency_key": 3}, "concurrency_key"),
    ({"unique_for": -1}, "unique_for"),
])
def test_bad_options_are_refused_at_definition(app: Celery, options: dict[str, Any],
                                               match: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=match):
        @app.task(name="t.bad", **options)
        def bad() -> None:
            return None


def test_celeriac_task_decorators(app: Celery) -> None:
    from celeriac.schedules import crontab
    from celeriac.task import periodic_task, serial_task, task

    app.set_current()

    @periodic_task(run_every=crontab(minute=0, hour="*/6"), queue="celery_periodic",
                   options={"expires": 60})
    def rebuild() -> str:
        return "rebuilt"

    @task
    def plain(x: int) -> int:
        return x

    @serial_task("{0}", timeout=30, queue="background_queue")
    def serial(key: str) -> str:
        return key

    entry = app.conf.beat_schedule[rebuild.name]
    assert entry["task"] == rebuild.name and entry["schedule"] == crontab(minute=0, hour="*/6")
    assert entry["options"] == {"expires": 60, "queue": "celery_periodic"}
    assert plain.name in app.tasks
    serial_task_obj = app.tasks[serial.name]
    assert (serial_task_obj.concurrency_limit, serial_task_obj.on_busy) == (1, "retry")
    assert (serial_task_obj.time_limit, serial_task_obj.queue) == (30, "background_queue")
    assert serial_task_obj.ignore_result is True and serial_task_obj.max_retries == 3
    app.conf.task_always_eager = True  # eager: runs at once, without a lock
    assert serial.delay("k").get() == "k"


def test_eager_failure_reaches_the_caller_through_get(app: Celery) -> None:
    app.conf.task_always_eager = True

    @app.task(name="t.uncool")
    def uncool() -> None:
        raise KeyError("my uncool error")

    res = uncool.delay()
    assert res.failed() is True
    with pytest.raises(KeyError, match="my uncool error"):
        res.get()
