"""Events and remote control with an in-process worker on each server broker.

The same checks as tests/unit/test_monitoring_memory.py, shortened, on Redis,
PostgreSQL, RabbitMQ (with Redis results) and SQLite: ping, ``active``, ``scheduled`` listing the
broker's delayed messages, ``revoke``, and the task events seen by a receiver.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from celeriac import Celery
from celeriac.events import State
from celeryproc import wait_until
from inprocess import threaded_worker

NODE = "wb1@test"


@pytest.fixture(params=["sqlite", "redis", "postgres", "amqp"])
def url(request: pytest.FixtureRequest) -> tuple[str, str, dict[str, Any]]:
    """``(broker URL, result backend URL, transport options)``."""
    if request.param == "sqlite":
        path = f"sqlite:///{request.getfixturevalue('sqlite_path')}"
        return path, path, {}
    if request.param in ("redis", "amqp"):
        prefix = request.getfixturevalue("key_prefix")
        redis_url = request.getfixturevalue("redis_url")
        if request.param == "amqp":  # RabbitMQ with Redis results
            pytest.importorskip("amqp")
            return request.getfixturevalue("rabbitmq_url"), redis_url, {
                "global_keyprefix": prefix}
        return redis_url, redis_url, {"global_keyprefix": prefix}
    return request.getfixturevalue("postgres_url"), request.getfixturevalue("postgres_url"), {}


def test_inspect_control_and_events(url: tuple[str, str, dict[str, Any]]) -> None:
    broker_url, backend_url, options = url
    app = Celery("monb", broker=broker_url, backend=backend_url, set_as_current=False)
    if not broker_url.startswith("amqp"):
        app.conf.broker_transport_options = options
    app.conf.result_backend_transport_options = options
    app.conf.worker_send_task_events = True

    @app.task(name="monb.sleep")
    def sleep(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    try:
        with threaded_worker(app, NODE, events=True) as (_, events):
            check_node(app, sleep, events)
    finally:
        app.close()


def check_node(app: Celery, sleep: Any, events: list[dict[str, Any]]) -> None:
    """ping, active, scheduled, revoke and the task events, on one broker."""
    inspect = app.control.inspect(destination=[NODE], timeout=2)
    running = sleep.delay(1.5)
    later = sleep.apply_async((0,), countdown=300)
    active = wait_until(lambda: (inspect.active() or {}).get(NODE), 20.0)
    assert [a["id"] for a in active] == [running.id]
    scheduled = [s["request"]["id"] for s in inspect.scheduled()[NODE]]
    if app.broker.capabilities.counts_delayed:
        assert scheduled == [later.id]
    else:  # RabbitMQ: the delay layout cannot be listed without consuming it
        assert scheduled == []
    assert app.control.revoke(later.id, reply=True, timeout=2, destination=[NODE]) == [
        {NODE: {"ok": f"tasks {{'{later.id}'}} flagged as revoked"}}]
    assert running.get(timeout=20) == 1.5
    state = State()
    wait_until(lambda: any(e["type"] == "task-succeeded" for e in events), 20.0)
    for event in list(events):
        state.event(event)
    task = state.tasks[running.id]
    assert task.state == "SUCCESS" and task.worker is not None
    assert task.worker.hostname == NODE
    started = next(e for e in events if e["type"] == "task-started")
    assert started["queue"] == "celery"
    if app.broker.capabilities.ready_times:
        assert started["time_to_start"] >= 0
    else:  # Redis: kombu's envelope has no publish time (docs/monitoring.md)
        assert "time_to_start" not in started
