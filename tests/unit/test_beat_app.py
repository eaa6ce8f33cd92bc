"""Beat with the real app: the seed's beat example, ``@app.periodic_task``, ``app.schedules``."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from celeriac import Celery
from celeriac.app.request import parse_request
from celeriac.beat.embedded import start_embedded
from celeriac.beat.scheduler import Scheduler
from celeriac.brokers.sqlite.beat_store import SQLiteStore
from celeriac.schedules import crontab
from celeriac.schedules.clock import ManualClock
from celeriac.schedules.stores import store_for_app

UTC = timezone.utc
MONDAY = datetime(2026, 3, 2, 7, 29, 0, tzinfo=UTC)


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("proj", broker="memory://", backend="memory://")
    yield app
    app.close()


def drain(app: Celery, queue: str = "celery") -> list[Any]:
    deliveries = app.broker.receive([queue], owner="test", limit=1000, timeout=0)
    app.broker.ack(deliveries)
    return [d.message for d in deliveries]


def seed_example(app: Celery) -> None:
    """The beat example of seed 002, as written (import changed)."""

    @app.on_after_configure.connect
    def setup_periodic_tasks(sender: Any, **kwargs: Any) -> None:
        # Calls test('hello') every 10 seconds.
        sender.add_periodic_task(10.0, test.s("hello"), name="add every 10")
        # Calls test('world') every 30 seconds
        sender.add_periodic_task(30.0, test.s("world"), expires=10)
        # Executes every Monday morning at 7:30 a.m.
        sender.add_periodic_task(crontab(hour=7, minute=30, day_of_week=1),
                                 test.s("Happy Mondays!"))

    @app.task
    def test(arg: str) -> None:
        print(arg)

    @app.task
    def add(x: int, y: int) -> None:
        print(x + y)


def test_seed_beat_example_runs_as_written(app: Celery) -> None:
    seed_example(app)
    clock = ManualClock(MONDAY)
    sched = Scheduler(app, clock=clock, node_id="solo")
    sched.setup()
    while clock.now() < MONDAY + timedelta(seconds=60.5):
        clock.advance(max(sched.tick(), 0.1))
    messages = drain(app)
    calls = Counter(parse_request(m, None).args[0] for m in messages)
    assert calls == {"hello": 6, "world": 2, "Happy Mondays!": 1}
    for message in messages:
        assert message.headers["celery_beat_task"] is True
        assert message.headers["task"].endswith("test")
    world = [m for m in messages if parse_request(m, None).args == ["world"]]
    assert all(m.headers["expires"] for m in world)
    assert [e.name for e in app.schedules.list()] == sorted(
        ["add every 10", repr(app.tasks[world[0].headers["task"]].s("world")),
         repr(app.tasks[world[0].headers["task"]].s("Happy Mondays!"))])


def test_periodic_task_decorator_routes_to_its_queue(app: Celery) -> None:
    @app.periodic_task(run_every=crontab(minute="*/15"), queue="background_queue")
    def refresh() -> str:
        return "ok"

    clock = ManualClock(datetime(2026, 3, 2, 9, 0, 1, tzinfo=UTC))
    sched = Scheduler(app, clock=clock, node_id="solo")
    sched.setup()
    while clock.now() < datetime(2026, 3, 2, 10, 0, 1, tzinfo=UTC):
        clock.advance(max(sched.tick(), 0.1))
    messages = drain(app, "background_queue")
    assert [m.headers["task"] for m in messages] == [refresh.name] * 4
    info = app.schedules.get(refresh.name)
    assert info.total_run_count == 4 and info.schedule == "cron */15 * * * *"


def test_app_schedules_api_and_run_now(app: Celery) -> None:
    @app.task
    def ping(n: int) -> int:
        return n

    schedules = app.schedules
    info = schedules.add("ping-often", ping.name, 5, args=(7,), options={"priority": 3})
    assert info.enabled and info.total_run_count == 0 and info.next_run_at is not None
    task_id = schedules.run_now("ping-often")
    [message] = drain(app)
    assert message.headers["id"] == task_id and parse_request(message, None).args == [7]
    assert schedules.get("ping-often").total_run_count == 1
    assert schedules.disable("ping-often").enabled is False
    assert schedules.update("ping-often", args=(8,)).args == (8,)
    assert schedules.enable("ping-often").enabled is True
    with pytest.raises(ValueError):
        schedules.add("ping-often", ping.name, 5)
    assert schedules.remove("ping-often") and schedules.list() == []
    with pytest.raises(KeyError):
        schedules.get("ping-often")


def test_sqlite_broker_keeps_the_schedule_in_its_file(sqlite_path: str) -> None:
    app = Celery("proj", broker=f"sqlite:///{sqlite_path}")
    try:
        store = store_for_app(app)
        assert isinstance(store, SQLiteStore)
        assert store.path == sqlite_path
        store.close()
    finally:
        app.close()


def test_embedded_scheduler_thread_sends_and_stops(app: Celery) -> None:
    app.conf.beat_schedule = {"fast": {"task": "proj.fast", "schedule": 0.2}}
    stop = threading.Event()
    thread = start_embedded(app, stop)
    deadline = time.monotonic() + 10
    sent: list[Any] = []
    while time.monotonic() < deadline and len(sent) < 2:
        sent += drain(app)
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert len(sent) >= 2 and {m.headers["task"] for m in sent} == {"proj.fast"}
