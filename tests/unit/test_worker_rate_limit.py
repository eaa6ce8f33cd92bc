"""Task ``rate_limit`` (issue 9, point 3): Celery's rate strings, the broker's shared bucket,
refused messages back in the broker (delayed), never held in worker memory."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celery
from celeriac.exceptions import ImproperlyConfigured
from celeriac.worker.consumer import Consumer
from celeriac.worker.pools import ThreadPool
from celeriac.worker.ratelimit import check_rate_limits, parse_rate


@pytest.mark.parametrize(("text", "per_second"), [
    ("10/s", 10.0), ("100/m", 100 / 60), ("5/h", 5 / 3600), ("2", 2.0), (3, 3.0),
    (0.5, 0.5), (None, 0.0), ("", 0.0), (0, 0.0), ("0/m", 0.0), (" 6 / m ", 0.1),
])
def test_celery_rate_strings(text: Any, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("bad", ["10/d", "ten/s", "-1/s", True, [1], "/s"])
def test_bad_rate_strings_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        parse_rate(bad)


def test_a_bad_rate_limit_stops_the_worker_naming_the_task() -> None:
    app = Celery("rl", broker="memory://", backend="memory://", set_as_current=False)

    @app.task(name="t.bad", rate_limit="3/day")
    def bad() -> None: ...

    with pytest.raises(ImproperlyConfigured, match=r"task t\.bad: rate limit '3/day'"):
        check_rate_limits(app)
    app.tasks.pop("t.bad")
    app.conf.task_default_rate_limit = "x"
    with pytest.raises(ImproperlyConfigured, match="setting task_default_rate_limit"):
        check_rate_limits(app)


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("rl", broker="memory://", backend="memory://", set_as_current=False)
    app.starts: list[float] = []  # type: ignore[attr-defined, misc]

    @app.task(name="t.limited", rate_limit="20/s")
    def limited() -> None:
        app.starts.append(time.monotonic())  # type: ignore[attr-defined]

    @app.task(name="t.free")
    def free() -> None:
        app.starts.append(time.monotonic())  # type: ignore[attr-defined]

    yield app


def run_consumer(app: Celery, until: Any, timeout: float = 20.0) -> Consumer:
    consumer = Consumer(app, ["celery"], ThreadPool(4), poll_timeout=0.05)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not until(consumer):
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.005)
    finally:
        consumer.stop()
        thread.join(10)
        consumer.pool.shutdown()
    return consumer


def test_rate_limited_messages_wait_in_the_broker_not_in_the_worker(app: Celery) -> None:
    for _ in range(8):
        app.tasks["t.limited"].delay()
    seen: dict[str, int] = {"delayed": 0, "buffered": 0}

    def check(consumer: Consumer) -> bool:
        seen["delayed"] = max(seen["delayed"], app.broker.stats("celery").delayed)
        seen["buffered"] = max(seen["buffered"], len(consumer.buffer))
        return len(app.starts) >= 8  # type: ignore[attr-defined]

    run_consumer(app, check)
    starts = sorted(app.starts)  # type: ignore[attr-defined]
    assert seen["delayed"] > 0 and seen["buffered"] == 0
    # 20/s with a bucket of one: 8 runs need at least 7 refills (0.35 s)
    assert starts[-1] - starts[0] >= 0.3
    assert app.broker.stats("celery").dead == 0


def test_without_a_rate_limit_nothing_is_delayed(app: Celery) -> None:
    for _ in range(8):
        app.tasks["t.free"].delay()
    delayed: list[int] = []
    run_consumer(app, lambda c: delayed.append(app.broker.stats("celery").delayed)
                 or len(app.starts) >= 8)  # type: ignore[attr-defined]
    assert max(delayed) == 0


def test_worker_disable_rate_limits_turns_it_off(app: Celery) -> None:
    app.conf.worker_disable_rate_limits = True
    app.tasks["t.limited"].rate_limit = "1/h"
    for _ in range(3):
        app.tasks["t.limited"].delay()
    run_consumer(app, lambda c: len(app.starts) >= 3)  # type: ignore[attr-defined]


def test_task_default_rate_limit_applies_to_tasks_without_their_own(app: Celery) -> None:
    app.conf.task_default_rate_limit = "1/h"
    app.tasks["t.free"].delay()
    app.tasks["t.free"].delay()
    run_consumer(app, lambda c: len(app.starts) >= 1  # type: ignore[attr-defined]
                 and app.broker.stats("celery").delayed == 1)
    time.sleep(0.2)
    assert len(app.starts) == 1  # type: ignore[attr-defined]


def test_the_bucket_is_the_brokers(app: Celery) -> None:
    app.tasks["t.limited"].rate_limit = "1/h"
    assert app.broker.take_token("task:t.limited", 1 / 3600, 1) == 0.0  # another worker ran one
    app.tasks["t.limited"].delay()
    run_consumer(app, lambda c: app.broker.stats("celery").delayed == 1)
    assert app.starts == []  # type: ignore[attr-defined]
