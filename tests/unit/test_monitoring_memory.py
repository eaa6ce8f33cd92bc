"""Events and remote control against an in-process worker on the memory broker.

A threads-pool worker runs in a thread of the test process; the test talks to it
through ``app.control`` / ``app.control.inspect()`` and watches its events with
``app.events.Receiver`` and ``State``, as a Python user would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celery
from celeriac.events import State
from celeryproc import wait_until
from inprocess import threaded_worker

NODE = "w1@test"


@pytest.fixture
def cluster() -> Iterator[tuple[Celery, Any, list[dict[str, Any]]]]:
    app = Celery("montest", broker="memory://", backend="cache+memory://")
    app.conf.worker_send_task_events = True
    app.conf.task_send_sent_event = True

    @app.task(name="montest.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="montest.sleep")
    def sleep(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @app.task(name="montest.fail")
    def fail() -> None:
        raise ValueError("boom")

    @app.task(name="montest.quiet", send_events=False)
    def quiet() -> str:
        return "shh"

    with threaded_worker(app, NODE, events=True) as (worker, events):
        yield app, worker, events


def test_inspect_queries(cluster: Any) -> None:
    app, _, _ = cluster
    running = app.tasks["montest.sleep"].delay(2)
    later = app.tasks["montest.add"].apply_async((1, 2), countdown=120)
    inspect = app.control.inspect(timeout=0.5)
    active = wait_until(lambda: (inspect.active() or {}).get(NODE), 10.0)
    assert [(a["id"], a["name"], a["args"]) for a in active] == [
        (running.id, "montest.sleep", [2])]
    assert active[0]["hostname"] == NODE and active[0]["time_start"] > 0
    scheduled = inspect.scheduled()[NODE]
    assert [s["request"]["id"] for s in scheduled] == [later.id]
    assert scheduled[0]["eta"].endswith("+00:00")
    assert inspect.query_task(running.id, later.id)[NODE] == {
        running.id: ["active", active[0]], later.id: ["scheduled", scheduled[0]["request"]]}
    registered = inspect.registered()[NODE]  # (with shared tasks other tests defined)
    assert registered == sorted(registered)
    assert {"montest.add", "montest.fail", "montest.sleep"} <= set(registered)
    assert not any(name.startswith("celery.") for name in registered)
    assert inspect.active_queues()[NODE][0]["name"] == "celery"
    stats = inspect.stats()[NODE]
    assert stats["pool"]["max-concurrency"] == 2 and "rusage" in stats
    assert inspect.conf()[NODE]["worker_send_task_events"] is True
    assert "celeriac" in inspect.report()[NODE]["ok"]
    assert app.control.inspect(destination=["nobody@x"], timeout=0.3).ping() is None
    assert app.control.inspect(destination=NODE, timeout=0.5).ping() == {"ok": "pong"}


def test_control_commands(cluster: Any, caplog: pytest.LogCaptureFixture) -> None:
    app, worker, _ = cluster
    later = app.tasks["montest.add"].apply_async((1, 2), countdown=120)
    assert app.control.revoke(later.id, reply=True, timeout=0.5) == [
        {NODE: {"ok": f"tasks {{'{later.id}'}} flagged as revoked"}}]
    assert later.id in app.control.inspect(timeout=0.5).revoked()[NODE]
    assert later.state == "REVOKED"
    assert app.control.rate_limit("montest.add", "10/m", reply=True, timeout=0.5) == [
        {NODE: {"ok": "new rate limit set successfully"}}]
    assert app.tasks["montest.add"].rate_limit == "10/m"
    assert app.control.time_limit("montest.add", soft=5, hard=10, reply=True,
                                  timeout=0.5) == [{NODE: {"ok": "time limits set successfully"}}]
    assert app.tasks["montest.add"].time_limit == 10
    assert app.control.add_consumer("extra", reply=True, timeout=0.5) == [
        {NODE: {"ok": "add consumer extra"}}]
    assert app.tasks["montest.add"].apply_async((2, 2), queue="extra").get(timeout=10) == 4
    assert app.control.cancel_consumer("extra", reply=True, timeout=0.5) == [
        {NODE: {"ok": "no longer consuming from extra"}}]
    grow = app.control.pool_grow(1, reply=True, timeout=0.5)[0][NODE]
    assert "error" in grow and "threads pool" in grow["error"]
    assert app.control.disable_events(reply=True, timeout=0.5) == [
        {NODE: {"ok": "task events disabled"}}]
    assert app.conf.worker_send_task_events is False
    with caplog.at_level("WARNING", logger="celeriac.worker"):
        app.control.shutdown()
        wait_until(lambda: worker._stop.is_set(), 10.0)
    assert "Got shutdown from remote" in caplog.text  # why the worker stops, in its log


def test_a_task_with_send_events_false_sends_no_task_events(cluster: Any) -> None:
    """Celery's ``Task.send_events``: the worker sends none of that task's events (the
    producer's ``task-sent`` is ``task_send_sent_event``'s, as in Celery)."""
    app, _, events = cluster
    quiet = app.tasks["montest.quiet"].delay()
    assert quiet.get(timeout=10) == "shh"
    ok = app.tasks["montest.add"].delay(1, 1)
    assert ok.get(timeout=10) == 2
    wait_until(lambda: any(e["type"] == "task-succeeded" and e.get("uuid") == ok.id
                           for e in events), 10.0)
    assert [e["type"] for e in events if e.get("uuid") == quiet.id] == ["task-sent"]


def test_events_describe_workers_and_tasks(cluster: Any) -> None:
    app, _, events = cluster
    ok = app.tasks["montest.add"].delay(2, 3)
    bad = app.tasks["montest.fail"].delay()
    assert ok.get(timeout=10) == 5
    with pytest.raises(ValueError):
        bad.get(timeout=10)
    state = State()
    wait_until(lambda: sum(e["type"] == "task-failed" for e in events)
               and any(e["type"] == "worker-heartbeat" for e in events), 10.0)
    for event in list(events):
        state.event(event)
    assert state.workers[NODE].alive
    assert state.tasks[ok.id].state == "SUCCESS" and state.tasks[ok.id].result == "5"
    assert state.tasks[ok.id].worker is state.workers[NODE]
    assert state.tasks[bad.id].state == "FAILURE"
    assert "ValueError" in state.tasks[bad.id].exception
    kinds = [e["type"] for e in events if e.get("uuid") == ok.id]
    # the producer's task-sent may come after the worker's first event (as in Celery)
    assert sorted(kinds) == sorted(["task-sent", "task-received", "task-started",
                                    "task-succeeded"])
    assert [k for k in kinds if k != "task-sent"] == ["task-received", "task-started",
                                                     "task-succeeded"]
    sent = next(e for e in events if e["type"] == "task-sent")
    assert sent["hostname"].startswith("gen") and sent["queue"] == "celery"
    received = next(e for e in events if e["type"] == "task-received" and e["uuid"] == ok.id)
    assert received["hostname"] == NODE and received["args"] == "(2, 3)"
