"""The RabbitMQ broker's URL parsing, message format and delay routing (no server needed).

The message format is checked against the golden capture of what kombu 5.7 publishes
(tests/fixtures/amqp-task-properties.json) and the delay routing against the captured
native-delayed-delivery routing key.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

amqp = pytest.importorskip("amqp")

from celeriac.brokers.amqp import topology, wire  # noqa: E402
from celeriac.brokers.amqp.connection import connection_kwargs, parse_url  # noqa: E402
from celeriac.exceptions import ImproperlyConfigured  # noqa: E402
from celeriac.messages import Message, task_message  # noqa: E402

FIXTURE = json.loads((Path(__file__).parents[1] / "fixtures" / "amqp-task-properties.json")
                     .read_text())


def test_urls_vhosts_tls_and_failover() -> None:
    [plain] = parse_url("amqp://user:p%40ss@rabbit:5673/prod")
    assert (plain.host, plain.port, plain.userid, plain.password, plain.vhost, plain.tls) == (
        "rabbit", 5673, "user", "p@ss", "prod", False)
    assert parse_url("amqp://h//")[0].vhost == "/"
    assert parse_url("pyamqp://h/")[0].vhost == "/"
    assert parse_url("amqp://h/%2Fx")[0].vhost == "/x"
    [tls] = parse_url("amqps://h")
    assert (tls.port, tls.tls, tls.userid, tls.password) == (5671, True, "guest", "guest")
    assert connection_kwargs(tls, {})["ssl"] is True
    hosts = parse_url("amqp://a//;amqp://b:5673//")
    assert [t.address for t in hosts] == ["a:5672", "b:5673"]
    with pytest.raises(ImproperlyConfigured, match="not an amqp"):
        parse_url("amqp://a//;redis://b")
    kwargs = connection_kwargs(parse_url("amqp://h//?heartbeat=30")[0], {"connect_timeout": 2})
    assert (kwargs["heartbeat"], kwargs["connect_timeout"]) == (30.0, 2.0)
    assert connection_kwargs(plain, {})["heartbeat"] == 0  # off: see docs/rabbitmq.md


def test_task_message_properties_match_kombus() -> None:
    captured = next(m for m in FIXTURE["classic"]["messages"] if m["label"] == "priority")
    headers = captured["properties"]["headers"]
    message = Message(headers, {"correlation_id": headers["id"], "reply_to": "r-1",
                                "delivery_mode": 2,
                                "delivery_info": {"exchange": "", "routing_key": "celery"},
                                "priority": 4, "body_encoding": "base64",
                                "delivery_tag": "tag-1"},
                      captured["body_raw"].encode(), "application/json", "utf-8")
    raw = wire.encode(message, 4)
    props = raw.properties
    expected = {k: v for k, v in captured["properties"].items()
                if k not in ("headers", "reply_to", "correlation_id")}
    assert {k: props[k] for k in expected} == {**expected, "priority": 5}  # 9 - 4
    assert props["application_headers"] == headers
    assert props["correlation_id"] == headers["id"]
    assert props["message_id"] == "tag-1"
    assert raw.body == captured["body_raw"].encode()


def test_decode_round_trip_and_bookkeeping_headers_are_stripped() -> None:
    message = task_message("tests.add", "t-1", (1, 2), {}, priority=2, queue="q",
                           headers={"x-trace": [1, "é", None]})
    raw = wire.encode(message, 2, counters=wire.Counters(3, 1, 100.0))
    raw.properties["application_headers"]["x-death"] = [{"count": 1}]
    raw.delivery_info = {"exchange": "", "routing_key": "q", "delivery_tag": 1,
                         "redelivered": False}
    decoded, counters, returns = wire.decode(raw, "q")
    assert decoded.headers == message.headers
    assert decoded.properties == message.properties
    assert counters == wire.Counters(3, 1, 100.0)
    assert returns == 0


def test_malformed_properties_survive_in_a_header() -> None:
    message = task_message("t", "t-2", (), {}).with_properties(priority="high",
                                                               delivery_info="x")
    raw = wire.encode(message, 0)
    raw.delivery_info = {"exchange": "", "routing_key": "q", "delivery_tag": 1}
    decoded, _, _ = wire.decode(raw, "q")
    assert decoded.properties["priority"] == "high"
    assert decoded.properties["delivery_info"] == "x"


def test_priorities_are_inverted_both_ways() -> None:
    assert [wire.amqp_priority(p) for p in (0, 3, 9, 12, -1)] == [9, 6, 0, 0, 9]
    assert [wire.celeriac_priority(p) for p in (9, 0, 5, None, 200)] == [0, 9, 4, 9, 0]


def test_delay_routing_matches_kombus_layout() -> None:
    captured = next(m for m in FIXTURE["quorum"]["messages"]
                    if m["label"] == "countdown_native_delayed")
    [routing_key] = captured["routing_keys"]
    assert topology.delay_route(5, "capture_quorum") == (routing_key, None)
    key, expiration = topology.delay_route(4.4, "q")
    assert key.endswith(".1.0.1.q")  # rounded up to 5 s: level 2 (4 s) then level 0
    assert expiration == 3400  # the first level's hold shortened by the 0.6 s rounding
    assert wire.strip_delay_bits(routing_key) == "capture_quorum"
    with pytest.raises(ValueError, match=r"8\.5 years"):
        topology.delay_route(2 ** 28, "q")


def test_queue_arguments_follow_celerys_settings() -> None:
    assert topology.queue_arguments("q", {}) == {}
    assert topology.queue_arguments("q", {"task_queue_max_priority": 10}) == {
        "x-max-priority": 10}
    assert topology.queue_arguments("q", {"task_default_queue_type": "quorum",
                                          "task_queue_max_priority": 10}) == {
        "x-queue-type": "quorum"}
    assert topology.queue_arguments("q", {"queue_types": {"q": "quorum"}}) == {
        "x-queue-type": "quorum"}
    with pytest.raises(ValueError, match="queue_type"):
        topology.queue_arguments("q", {"queue_type": "stream"})
