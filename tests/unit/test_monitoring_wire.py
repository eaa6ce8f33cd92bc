"""celeriac's event and pidbox messages against the golden captures of real Celery 5.7.

tests/fixtures/events-redis.json and pidbox-redis.json hold what Celery put on
Redis. Checked here without services: the kombu envelope of a broadcast (key
order included), every event type's fields as a celeriac worker sends them
(an in-process worker on the memory broker), the pidbox request and reply
formats, and the shapes of ``active``/``scheduled``/``stats`` replies.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery
from celeriac.brokers.base import Broadcast
from celeriac.brokers.fanout import loads, to_envelope
from celeriac.control.mailbox import reply_message, request_message
from inprocess import threaded_worker

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
#: fields celeriac adds to task-started (time-to-start); Celery's tools ignore them
EXTRA = {"task-started": {"queue", "time_to_start"}}


def golden(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def golden_events() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for message in golden("events-redis.json")["messages"]:
        body = message["body_decoded"]
        for event in body if isinstance(body, list) else [body]:
            out.setdefault(event["type"], event)
    return out


def test_broadcast_envelope_is_kombus() -> None:
    captured = golden("events-redis.json")["messages"][0]
    ours = to_envelope(Broadcast(exchange="celeryev", routing_key="worker.online",
                                 body=b"{}", headers={"hostname": "w@h"}))
    env = captured["envelope_without_body"]
    assert list(ours) == ["body", *env]
    assert list(ours["properties"]) == list(env["properties"])
    assert ours["properties"]["delivery_info"] == env["properties"]["delivery_info"]
    assert ours["properties"]["delivery_mode"] == 1
    raw = captured["args"][1]
    back = loads(raw)
    assert back.routing_key == "worker.online" and back.headers == {"hostname": "celery@capture"}
    assert json.loads(back.body)["type"] == "worker-online"


def test_pidbox_request_and_reply_formats() -> None:
    command = golden("pidbox-redis.json")["commands"][0]
    captured = command["request"]
    message, ticket = request_message("celery.pidbox", "ping", {}, None,
                                      reply_exchange="reply.celery.pidbox", oid="oid-1",
                                      timeout=3)
    body = json.loads(message.body)
    assert list(body) == list(captured["body_decoded"])
    assert body["reply_to"] == {"exchange": "reply.celery.pidbox", "routing_key": "oid-1"}
    assert list(message.headers) == list(captured["envelope_without_body"]["headers"])
    assert message.persistent and message.routing_key == ""
    assert to_envelope(message)["properties"]["delivery_mode"] == 2
    reply = reply_message(body, "w1@h", {"ok": "pong"})
    assert reply is not None and json.loads(reply.body) == {"w1@h": {"ok": "pong"}}
    captured_reply = command["replies"][0]["envelope_without_body"]
    assert list(reply.headers) == list(captured_reply["headers"]) and reply.headers["ticket"] \
        == ticket
    assert (reply.exchange, reply.routing_key) == ("reply.celery.pidbox", "oid-1")
    assert to_envelope(reply)["properties"]["delivery_mode"] == 1


@pytest.fixture
def node() -> Any:
    app = Celery("wire", broker="memory://", backend="cache+memory://")
    app.conf.worker_send_task_events = True
    app.conf.task_send_sent_event = True

    @app.task(name="wire.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="wire.fail")
    def fail() -> None:
        raise ValueError("boom")

    @app.task(name="wire.sleep")
    def sleep(seconds: float) -> None:
        time.sleep(seconds)

    with threaded_worker(app, "w@wire", events=True) as (_, events):
        yield app, events


def test_event_fields_match_celerys(node: Any) -> None:
    app, events = node
    app.tasks["wire.add"].delay(1, 2).get(timeout=10)
    with pytest.raises(ValueError):
        app.tasks["wire.fail"].delay().get(timeout=10)
    deadline = time.monotonic() + 10
    wanted = {"worker-online", "task-sent", "task-received", "task-started", "task-succeeded",
              "task-failed", "worker-heartbeat"}
    while not wanted <= {e["type"] for e in events}:
        assert time.monotonic() < deadline, {e["type"] for e in events}
        time.sleep(0.05)
    reference = golden_events()
    for kind in sorted(wanted):
        ours = next(e for e in events if e["type"] == kind)
        theirs = set(reference[kind]) | {"local_received"}
        assert set(ours) - EXTRA.get(kind, set()) == theirs, kind


def test_reply_shapes_match_celerys(node: Any) -> None:
    app, _ = node
    commands = {c["label"]: c for c in golden("pidbox-redis.json")["commands"]}

    def shape(label: str) -> Any:
        return next(iter(commands[label]["replies"][0]["body_decoded"].values()))

    running = app.tasks["wire.sleep"].delay(2)
    app.tasks["wire.add"].apply_async((1, 1), countdown=300)
    inspect = app.control.inspect(timeout=0.5)
    deadline = time.monotonic() + 10
    while not (active := next(iter((inspect.active() or {"": []}).values()))):
        assert time.monotonic() < deadline
    assert active[0]["id"] == running.id
    assert list(active[0]) == list(shape("inspect active")[0])
    assert list(active[0]["delivery_info"]) == list(shape("inspect active")[0]["delivery_info"])
    scheduled = next(iter(inspect.scheduled().values()))
    assert list(scheduled[0]) == list(shape("inspect scheduled")[0])
    assert list(scheduled[0]["request"]) == list(shape("inspect scheduled")[0]["request"])
    stats = next(iter(inspect.stats().values()))
    assert {"total", "pid", "clock", "uptime", "pool", "broker", "prefetch_count",
            "rusage"} <= set(stats)
    assert set(next(iter(inspect.active_queues().values()))[0]) == set(
        shape("inspect active_queues")[0])
    assert next(iter(inspect.clock().values())).keys() == {"clock"}
