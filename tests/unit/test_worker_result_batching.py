"""Consumers that run jobs on their own thread (solo, prefork children) with a prefetch
store plain SUCCESS results in batches, always before the acknowledgements of those
messages."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celery
from celeriac.worker.consumer import Consumer
from celeriac.worker.pools import SoloPool


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("batching", broker="memory://", backend="memory://")
    yield app
    app.close()


def _run(app: Celery, until: Any, timeout: float = 10.0) -> Consumer:
    consumer = Consumer(app, ["celery"], SoloPool(), poll_timeout=0.05, prefetch=4)
    thread = threading.Thread(target=consumer.run)
    thread.start()
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        time.sleep(0.02)
    consumer.stop()
    thread.join(10)
    return consumer


def test_batched_results_are_all_stored_and_acked(app: Celery) -> None:
    @app.task
    def square(x: int) -> int:
        return x * x

    results = [square.delay(i) for i in range(50)]
    calls: list[int] = []
    original = app.backend.set_many  # type: ignore[union-attr]

    def counting_set_many(items: Any, **kw: Any) -> None:
        items = list(items)
        calls.append(len(items))
        original(items, **kw)

    app.backend.set_many = counting_set_many  # type: ignore[union-attr,method-assign]
    _run(app, lambda: all(r.ready() for r in results))
    assert [r.get(timeout=1) for r in results] == [i * i for i in range(50)]
    assert sum(calls) == 50  # every SUCCESS went through set_many
    stats = app.broker.stats("celery")
    assert (stats.ready, stats.leased) == (0, 0)


def test_store_failure_keeps_results_and_holds_back_acks(app: Celery) -> None:
    @app.task
    def one() -> int:
        return 1

    res = one.delay()
    original = app.backend.set_many  # type: ignore[union-attr]
    failures = {"left": 1}

    def flaky_set_many(items: Any, **kw: Any) -> None:
        if failures["left"]:
            failures["left"] -= 1
            # the message must still be leased (not acked) while its result is unstored
            assert app.broker.stats("celery").leased == 1
            raise ConnectionError("result store down")
        original(items, **kw)

    app.backend.set_many = flaky_set_many  # type: ignore[union-attr,method-assign]
    _run(app, lambda: res.ready(), timeout=15)
    assert failures["left"] == 0
    assert res.get(timeout=1) == 1
    assert app.broker.stats("celery").leased == 0


def test_results_with_callbacks_are_stored_at_once(app: Celery) -> None:
    @app.task
    def first() -> int:
        return 2

    @app.task
    def second(x: int) -> int:
        return x + 1

    res = first.apply_async(link=second.s())
    stored_directly: list[str] = []
    original_set = app.backend.set  # type: ignore[union-attr]

    def recording_set(task_id: str, meta: Any, **kw: Any) -> None:
        if meta.get("status") == "SUCCESS":
            stored_directly.append(task_id)
        original_set(task_id, meta, **kw)

    app.backend.set = recording_set  # type: ignore[union-attr,method-assign]
    _run(app, lambda: res.ready())
    assert res.id in stored_directly  # a linked task's result is not deferred


def test_without_prefetch_results_are_stored_at_once(app: Celery) -> None:
    consumer = Consumer(app, ["celery"], SoloPool())
    assert consumer.runner.batch_results is False  # one result per turn: nothing to batch

