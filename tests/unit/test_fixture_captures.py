"""Invariants of the golden wire captures taken from real Celery 5.7 (``tests/fixtures/*.json``).

The scripts in ``tests/fixtures/capture/`` record what Celery and kombu put on Redis and
RabbitMQ for events, remote control, signed messages and AMQP task properties. These checks
need no services: they catch a bad re-capture (missing messages, wrong broker, a changed
shape) and pin the facts later work builds on. The signing checks verify the signature with
``cryptography`` and with Celery's own serializer (both test dependencies).
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

FIXTURES = Path(__file__).parents[1] / "fixtures"
WORKER = "celery@capture"
BROKERS = ["redis", "amqp"]
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SEP = "\x06\x16"  # kombu's Redis binding separator


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


EVENTS = {b: load(f"events-{b}.json") for b in BROKERS}
PIDBOX = {b: load(f"pidbox-{b}.json") for b in BROKERS}
SIGNING = load("signing-auth.json")
TASKS = load("amqp-task-properties.json")


def view(record: dict[str, Any]) -> dict[str, Any]:
    """One message, Redis MONITOR record or RabbitMQ firehose trace, in common terms."""
    if "command" in record:  # Redis: the envelope is the last argument
        env = json.loads(record["args"][-1])
        assert {k: v for k, v in env.items() if k != "body"} == record["envelope_without_body"]
        props = env["properties"]
        assert props["body_encoding"] == "base64"
        assert UUID.match(props["delivery_tag"])
        raw = base64.b64decode(env["body"])
        return {"exchange": props["delivery_info"]["exchange"],
                "routing_key": props["delivery_info"]["routing_key"], "headers": env["headers"],
                "content_type": env["content-type"], "encoding": env["content-encoding"],
                "delivery_mode": props["delivery_mode"], "priority": props["priority"],
                "body": json.loads(raw) if env["content-type"] == "application/json" else raw}
    props = record["properties"]
    assert len(record["routing_keys"]) == 1
    body = record["body_raw"]
    return {"exchange": record["exchange"], "routing_key": record["routing_keys"][0],
            "headers": props.get("headers", {}), "content_type": props["content_type"],
            "encoding": props["content_encoding"], "delivery_mode": props["delivery_mode"],
            "priority": props["priority"],
            "body": json.loads(body) if props["content_type"] == "application/json" else body}


def rabbit_args(entry: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, _type, value in entry["arguments"]}


def events_of(body: Any) -> list[dict[str, Any]]:
    return body if isinstance(body, list) else [body]


# ------------------------------------------------------------------ events

WANTED_EVENTS = {"worker-online", "worker-heartbeat", "worker-offline", "task-sent",
                 "task-received", "task-started", "task-succeeded", "task-failed",
                 "task-retried", "task-rejected", "task-revoked"}
BASE_FIELDS = {"hostname", "utcoffset", "pid", "clock", "timestamp", "type"}
WORKER_FIELDS = BASE_FIELDS | {"freq", "active", "processed", "loadavg", "sw_ident", "sw_ver",
                               "sw_sys"}
EVENT_FIELDS = {
    "worker-online": WORKER_FIELDS, "worker-heartbeat": WORKER_FIELDS,
    "worker-offline": WORKER_FIELDS,
    "task-sent": BASE_FIELDS | {"uuid", "name", "args", "kwargs", "retries", "eta", "expires",
                                "root_id", "parent_id", "queue", "exchange", "routing_key"},
    "task-received": BASE_FIELDS | {"uuid", "name", "args", "kwargs", "retries", "eta",
                                    "expires", "root_id", "parent_id"},
    "task-started": BASE_FIELDS | {"uuid"},
    "task-succeeded": BASE_FIELDS | {"uuid", "result", "runtime"},
    "task-failed": BASE_FIELDS | {"uuid", "exception", "traceback"},
    "task-retried": BASE_FIELDS | {"uuid", "exception", "traceback"},
    "task-rejected": BASE_FIELDS | {"uuid", "requeue"},
    "task-revoked": BASE_FIELDS | {"uuid", "terminated", "signum", "expired"},
}


def all_events(broker: str) -> list[dict[str, Any]]:
    return [e for m in EVENTS[broker]["messages"] for e in events_of(view(m)["body"])]


@pytest.mark.parametrize("broker", BROKERS)
def test_event_messages_envelope_and_routing(broker: str) -> None:
    data = EVENTS[broker]
    assert data["captured"]["celery"] == data["captured"]["kombu"] == "5.7.0"
    for record in data["messages"]:
        v = view(record)
        events = events_of(v["body"])
        assert (v["exchange"], v["content_type"], v["encoding"]) == (
            "celeryev", "application/json", "utf-8")
        assert (v["delivery_mode"], v["priority"]) == (1, 0)  # transient
        assert v["headers"] == {"hostname": events[0]["hostname"]}
        if v["routing_key"] == "task.multi":  # the worker batches task events
            assert isinstance(v["body"], list)
            assert all(e["type"].startswith("task-") for e in events)
        else:
            assert isinstance(v["body"], dict)
            assert v["routing_key"] == v["body"]["type"].replace("-", ".")
        if broker == "redis":
            db = data["captured"]["redis_db"]
            assert record["command"] == "PUBLISH"
            assert record["args"][0] == f"/{db}.celeryev/{v['routing_key']}"
        else:
            assert record["routed_queues"]
            assert all(q.startswith("celeryev.") for q in record["routed_queues"])


@pytest.mark.parametrize("broker", BROKERS)
def test_every_event_type_with_its_fields(broker: str) -> None:
    events = all_events(broker)
    assert {e["type"] for e in events} == WANTED_EVENTS
    for event in events:
        assert set(event) == EVENT_FIELDS[event["type"]], event["type"]
    ids = EVENTS[broker]["captured"]["task_ids"]
    by_id: dict[str, dict[str, dict[str, Any]]] = {}
    for e in events:
        if "uuid" in e:
            by_id.setdefault(e["uuid"], {})[e["type"]] = e
    assert by_id[ids["add"]]["task-succeeded"]["result"] == "4"
    assert by_id[ids["fail"]]["task-failed"]["exception"] == "ValueError('boom')"
    assert {"task-retried", "task-failed"} <= set(by_id[ids["retry_once"]])
    rejected = by_id[ids["reject"]]
    assert rejected["task-rejected"]["requeue"] is False
    assert "task-failed" in rejected  # Reject also emits task-failed
    assert by_id[ids["expired"]]["task-revoked"]["expired"] is True
    terminated = by_id[ids["terminated"]]["task-revoked"]
    assert (terminated["terminated"], terminated["signum"]) == (True, 9)
    sent = by_id[ids["add"]]["task-sent"]
    assert (sent["queue"], sent["exchange"], sent["routing_key"]) == ("celery", "", "celery")
    assert all(e["hostname"] == WORKER for e in events if e["type"].startswith("worker-"))


def test_event_fields_match_between_brokers() -> None:
    def shapes(broker: str) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for e in all_events(broker):
            out.setdefault(e["type"], set()).update(e)
        return out

    assert shapes("redis") == shapes("amqp")


def test_event_declarations_on_redis() -> None:
    data = EVENTS["redis"]
    db = data["captured"]["redis_db"]
    receiver = data["captured"]["receiver_queue"]
    assert (receiver["exchange"], receiver["exchange_type"], receiver["routing_key"]) == (
        "celeryev", "fanout", "#")
    subscribed = [d["args"][0] for d in data["declarations"] if d["command"] == "PSUBSCRIBE"]
    assert f"/{db}.celeryev/*" in subscribed  # receiver: routing key '#' becomes '*'
    assert f"/{db}.celeryev/worker.*" in subscribed  # worker gossip: 'worker.#'
    members = {d["args"][1] for d in data["declarations"]
               if d["command"] == "SADD" and d["args"][0] == "_kombu.binding.celeryev"}
    assert f"#{SEP}{SEP}{receiver['name']}" in members
    assert any(m.startswith(f"worker.#{SEP}{SEP}celeryev.") for m in members)


def test_event_declarations_on_rabbitmq() -> None:
    data = EVENTS["amqp"]
    declared = data["declared"]
    exchange = next(e for e in declared["exchanges"] if e["name"] == "celeryev")
    assert (exchange["type"], exchange["durable"], exchange["auto_delete"]) == (
        "topic", True, False)
    queues = {q["name"]: q for q in declared["queues"] if q["name"].startswith("celeryev.")}
    receiver = queues[data["captured"]["receiver_queue"]["name"]]
    for queue in queues.values():
        assert (queue["durable"], queue["auto_delete"], queue["exclusive"]) == (
            False, True, True)
        assert rabbit_args(queue) == {"x-message-ttl": 5000, "x-expires": 60000}
    keys = {b["destination_name"]: b["routing_key"] for b in declared["bindings"]
            if b["source_name"] == "celeryev"}
    assert keys[receiver["name"]] == "#"
    assert sorted(keys.values()) == ["#", "worker.#"]


# ------------------------------------------------------------------ remote control

CALL_LABELS = ["inspect ping", "inspect ping -d", "inspect active", "inspect reserved",
               "inspect scheduled", "inspect query_task", "inspect registered",
               "inspect stats", "inspect active_queues", "inspect conf", "inspect report",
               "inspect clock", "control rate_limit", "control time_limit",
               "control pool_grow", "control pool_shrink", "control add_consumer",
               "control cancel_consumer", "control enable_events", "control disable_events",
               "control heartbeat", "control revoke", "control terminate",
               "api revoke terminate", "api broadcast without reply",
               "control pool_shrink (idle pool)", "inspect revoked", "control shutdown"]
FIXED_REPLIES = {
    "inspect ping": {"ok": "pong"}, "inspect ping -d": {"ok": "pong"},
    "control rate_limit": {"ok": "new rate limit set successfully"},
    "control time_limit": {"ok": "time limits set successfully"},
    "control pool_grow": {"ok": "pool will grow"},
    "control pool_shrink": {"error": "ValueError(\"Can't shrink pool. All processes busy!\")"},
    "control pool_shrink (idle pool)": {"ok": "pool will shrink"},
    "control add_consumer": {"ok": "add consumer capture_extra"},
    "control cancel_consumer": {"ok": "no longer consuming from capture_extra"},
    "control enable_events": {"ok": "task events enabled"},
    "control disable_events": {"ok": "task events disabled"},
    "control heartbeat": None,
}
REQUEST_INFO = {"id", "name", "args", "kwargs", "type", "hostname", "time_start",
                "acknowledged", "delivery_info", "worker_pid"}


def commands(broker: str) -> dict[str, dict[str, Any]]:
    return {c["label"]: c for c in PIDBOX[broker]["commands"]}


def expected_arguments(ids: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {
        "inspect query_task": {"ids": [ids["active"], ids["reserved"], ids["scheduled"]]},
        "inspect registered": {"taskinfoitems": []},
        "control rate_limit": {"task_name": "capture_app.add", "rate_limit": "10/m"},
        "control time_limit": {"task_name": "capture_app.add", "soft": 30.0, "hard": 60.0},
        "control pool_grow": {"n": 1}, "control pool_shrink": {"n": 1},
        "control pool_shrink (idle pool)": {"n": 1},
        "control add_consumer": {"queue": "capture_extra"},
        "control cancel_consumer": {"queue": "capture_extra"},
        "control revoke": {"task_id": [ids["scheduled"]]},
        "control terminate": {"signal": "SIGTERM", "task_id": [ids["active"]]},
        "api revoke terminate": {"task_id": [ids["active_2"], ids["reserved"]],
                                 "terminate": True, "signal": "SIGKILL"},
        "api broadcast without reply": {"task_name": "capture_app.add", "rate_limit": "20/m"},
    }


@pytest.mark.parametrize("broker", BROKERS)
def test_control_requests(broker: str) -> None:
    data = PIDBOX[broker]
    assert [c["label"] for c in data["commands"]] == CALL_LABELS
    args = expected_arguments(data["captured"]["task_ids"])
    for label, command in commands(broker).items():
        v = view(command["request"])
        assert (v["exchange"], v["routing_key"], v["content_type"]) == (
            "celery.pidbox", "", "application/json"), label
        assert v["delivery_mode"] == 2
        assert set(v["headers"]) == {"clock", "expires"} and v["headers"]["expires"] > 0
        body = v["body"]
        assert body["arguments"] == args.get(label, {}), label
        assert body["destination"] == ([WORKER] if label == "inspect ping -d" else None)
        assert (body["pattern"], body["matcher"]) == (None, None)
        if label == "api broadcast without reply":
            assert set(body) == {"method", "arguments", "destination", "pattern", "matcher"}
            continue
        assert UUID.match(body["ticket"])
        assert body["reply_to"]["exchange"] == "reply.celery.pidbox"
        assert UUID.match(body["reply_to"]["routing_key"])
        if broker == "redis":
            db = data["captured"]["redis_db"]
            assert command["request"]["args"][0] == f"/{db}.celery.pidbox"
        else:
            assert command["request"]["routed_queues"] == [f"{WORKER}.celery.pidbox"]


@pytest.mark.parametrize("broker", BROKERS)
def test_control_replies(broker: str) -> None:
    ids = PIDBOX[broker]["captured"]["task_ids"]
    for label, command in commands(broker).items():
        request = view(command["request"])["body"]
        if label in {"api broadcast without reply", "control shutdown"}:
            assert command["replies"] == []  # a cast; shutdown stops before replying
            continue
        (reply,) = command["replies"]
        v = view(reply)
        oid = request["reply_to"]["routing_key"]
        assert (v["exchange"], v["routing_key"], v["delivery_mode"]) == (
            "reply.celery.pidbox", oid, 1)
        assert set(v["headers"]) == {"ticket", "clock"}
        assert v["headers"]["ticket"] == request["ticket"]
        if broker == "redis":
            assert (reply["command"], reply["args"][0]) == ("LPUSH", f"{oid}.reply.celery.pidbox")
        else:
            assert reply["routed_queues"] == [f"{oid}.reply.celery.pidbox"]
        assert list(v["body"]) == [WORKER]
        payload = v["body"][WORKER]
        if label in FIXED_REPLIES:
            assert payload == FIXED_REPLIES[label], label
    replies = {label: view(c["replies"][0])["body"][WORKER]
               for label, c in commands(broker).items() if c["replies"]}
    assert [set(t) for t in replies["inspect active"]] == [REQUEST_INFO, REQUEST_INFO]
    assert all(t["acknowledged"] and t["time_start"] for t in replies["inspect active"])
    (reserved,) = replies["inspect reserved"]
    assert (reserved["id"], reserved["acknowledged"], reserved["time_start"]) == (
        ids["reserved"], False, None)
    (scheduled,) = replies["inspect scheduled"]
    assert set(scheduled) == {"eta", "priority", "request"}
    assert scheduled["request"]["id"] == ids["scheduled"]
    states = {i: s[0] for i, s in replies["inspect query_task"].items()}
    assert states == {ids["active"]: "active", ids["reserved"]: "reserved",
                      ids["scheduled"]: "scheduled"}
    assert "capture_app.add" in replies["inspect registered"]
    assert {"total", "pid", "clock", "uptime", "pool", "broker", "prefetch_count",
            "rusage"} <= set(replies["inspect stats"])
    assert [q["name"] for q in replies["inspect active_queues"]] == ["celery"]
    assert replies["inspect conf"]["task_send_sent_event"] is True
    assert replies["inspect report"]["ok"].startswith("\nsoftware -> celery:5.7.0")
    assert set(replies["inspect clock"]) == {"clock"}
    assert replies["control revoke"] == {"ok": f"tasks {{'{ids['scheduled']}'}} flagged as "
                                               "revoked"}
    assert replies["control terminate"] == {"ok": f"terminate: {ids['active']}"}
    assert replies["api revoke terminate"]["ok"].startswith("terminate: ")
    assert set(replies["inspect revoked"]) == {ids["scheduled"], ids["active"],
                                               ids["active_2"], ids["reserved"]}


@pytest.mark.parametrize("broker", BROKERS)
def test_worker_startup_hello(broker: str) -> None:
    (hello,) = PIDBOX[broker]["worker_startup_requests"]
    body = view(hello)["body"]
    assert body["method"] == "hello"
    assert body["arguments"] == {"from_node": WORKER, "revoked": []}


def test_pidbox_redis_keys() -> None:
    data = PIDBOX["redis"]
    db = data["captured"]["redis_db"]
    bindings = data["binding_commands"]
    worker_member = f"{SEP}{SEP}{WORKER}.celery.pidbox"  # fanout: empty key and pattern
    assert {"command": "SADD", "args": ["_kombu.binding.celery.pidbox", worker_member],
            "inside_lua": True} in bindings
    assert {"command": "PSUBSCRIBE", "args": [f"/{db}.celery.pidbox"]} in bindings
    reply_sadd = [b for b in bindings if b["command"] == "SADD"
                  and b["args"][0] == "_kombu.binding.reply.celery.pidbox"]
    oid, _, queue = reply_sadd[0]["args"][1].partition(f"{SEP}{SEP}")
    assert UUID.match(oid) and queue == f"{oid}.reply.celery.pidbox"
    deadline = next(b for b in bindings if b["command"] == "ZADD")
    assert deadline["args"][:2] == ["_kombu.binding_deadlines", "GT"]  # binding expiry (ms)
    assert deadline["args"][3] == "reply.celery.pidbox" and deadline["inside_lua"]
    assert any(s.startswith("BRPOP <uuid>.reply.celery.pidbox") for s in data["key_shapes"])


def test_pidbox_rabbitmq_declarations() -> None:
    data = PIDBOX["amqp"]
    exchanges = {e["name"]: e for e in data["declared_with_worker"]["exchanges"]}
    assert (exchanges["celery.pidbox"]["type"], exchanges["celery.pidbox"]["durable"]) == (
        "fanout", False)
    assert (exchanges["reply.celery.pidbox"]["type"],
            exchanges["reply.celery.pidbox"]["durable"]) == ("direct", False)
    queue = next(q for q in data["declared_with_worker"]["queues"]
                 if q["name"] == f"{WORKER}.celery.pidbox")
    (reply_queue,) = data["declared_while_client_waits"]["queues"]
    for q in (queue, reply_queue):
        assert (q["durable"], q["auto_delete"], q["exclusive"]) == (False, True, True)
        assert rabbit_args(q) == {"x-expires": 10000, "x-message-ttl": 300000}
    binding = next(b for b in data["declared_while_client_waits"]["bindings"]
                   if b["source_name"] == "reply.celery.pidbox")
    assert reply_queue["name"] == binding["destination_name"] == (
        f"{binding['routing_key']}.reply.celery.pidbox")


# ------------------------------------------------------------------ signing


def test_signing_key_and_cert_are_marked_test_only() -> None:
    for name in ("test-signing-key.pem", "test-signing-cert.pem"):
        assert (FIXTURES / name).read_text().startswith("TEST ONLY")


def _cert() -> x509.Certificate:
    return x509.load_pem_x509_certificate((FIXTURES / "test-signing-cert.pem").read_bytes())


def _unpack(payload: str) -> list[bytes]:
    fields = base64.b64decode(payload).split(b"\x00\x01", 4)
    assert len(fields) == 5
    return fields


@pytest.mark.parametrize("where", ["redis", "amqp"])
def test_signed_payload_verifies(where: str) -> None:
    record = SIGNING[where]
    payload = record["auth_payload"] if where == "redis" else record["body_raw"]
    signer, signature, content_type, encoding, body = _unpack(payload)
    cert = _cert()
    issuer = " ".join(str(attr.value) for attr in cert.issuer)
    assert base64.b64decode(signer).decode() == f"{issuer} {cert.serial_number}"
    assert (content_type, encoding) == (b"application/json", b"utf-8")
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)
    cert.public_key().verify(base64.b64decode(signature), body, pss, hashes.SHA256())
    with pytest.raises(InvalidSignature):
        cert.public_key().verify(base64.b64decode(signature), body.replace(b"3", b"4"), pss,
                                 hashes.SHA256())
    assert json.loads(body)[:2] == [[2, 3], {}]


@pytest.mark.parametrize("where", ["redis", "amqp"])
def test_celery_accepts_the_signed_payload(where: str) -> None:
    from celery.security.certificate import FSCertStore
    from celery.security.serialization import SecureSerializer

    record = SIGNING[where]
    payload = record["auth_payload"] if where == "redis" else record["body_raw"]
    serializer = SecureSerializer(cert_store=FSCertStore(str(FIXTURES / "test-signing-cert.pem")),
                                  digest="sha256")
    assert serializer.deserialize(payload)[:2] == [[2, 3], {}]


def test_signed_message_envelopes() -> None:
    redis, amqp = SIGNING["redis"], SIGNING["amqp"]
    env = json.loads(redis["raw"])
    assert (env["content-type"], env["content-encoding"]) == ("application/data", "utf-8")
    assert base64.b64decode(env["body"]).decode() == redis["auth_payload"]  # base64 twice
    assert env["headers"]["task"] == "capture_app.add"
    assert redis["worker_ran_it"]["result"] == 5
    props = amqp["properties"]
    assert (props["content_type"], props["content_encoding"]) == ("application/data", "utf-8")
    assert set(props["headers"]) == set(env["headers"])


# ------------------------------------------------------------------ AMQP task properties


def by_label(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["label"]: r for r in records}


def test_classic_task_message_properties() -> None:
    messages = by_label(TASKS["classic"]["messages"])
    assert set(messages) == {"delay", "priority", "countdown_classic", "expires"}
    redis_headers = set(json.loads(SIGNING["redis"]["raw"])["headers"])
    for label, m in messages.items():
        props = m["properties"]
        assert (m["exchange"], m["routing_keys"], m["routed_queues"]) == ("", ["celery"],
                                                                          ["celery"])
        assert (props["content_type"], props["content_encoding"], props["delivery_mode"]) == (
            "application/json", "utf-8", 2)
        assert props["correlation_id"] == props["headers"]["id"]
        assert UUID.match(props["reply_to"])
        assert set(props["headers"]) == redis_headers  # same task headers as on Redis
        assert len(json.loads(m["body_raw"])) == 3
        assert props["priority"] == (5 if label == "priority" else 0)
        assert (props["headers"]["eta"] is not None) == (label == "countdown_classic")
        assert ("expiration" in props) == (label == "expires")
    assert messages["expires"]["properties"]["expiration"] == "3600000"


def test_native_delayed_delivery_message() -> None:
    messages = by_label(TASKS["quorum"]["messages"])
    plain = messages["delay_quorum"]
    assert (plain["exchange"], plain["routing_keys"]) == ("capture_quorum", ["capture_quorum"])
    delayed = messages["countdown_native_delayed"]
    countdown = 5
    bits = ".".join(format(countdown, "028b"))
    assert delayed["exchange"] == "celery_delayed_27"
    assert delayed["routing_keys"] == [f"{bits}.capture_quorum"]
    assert delayed["routed_queues"] == [f"celery_delayed_{countdown.bit_length() - 1}"]
    assert delayed["properties"]["headers"]["eta"] is not None
    (delivered,) = TASKS["quorum"]["delivered"]
    headers = delivered["properties"]["headers"]
    assert delivered["trace"] == "deliver.capture_quorum"
    assert delivered["exchange"] == "celery_delayed_delivery"
    assert headers["x-first-death-exchange"] == "celery_delayed_27"
    assert {d["reason"] for d in headers["x-death"]} == {"expired"}


def test_native_delayed_delivery_topology() -> None:
    declared = TASKS["quorum"]["declared"]
    exchanges = {e["name"]: e for e in declared["exchanges"]}
    queues = {q["name"]: q for q in declared["queues"]}
    bindings = {(b["source_name"], b["destination_name"]): b["routing_key"]
                for b in declared["bindings"]}
    assert exchanges["celery_delayed_delivery"]["type"] == "topic"
    for level in range(28):
        name = f"celery_delayed_{level}"
        below = f"celery_delayed_{level - 1}" if level else "celery_delayed_delivery"
        assert (exchanges[name]["type"], exchanges[name]["durable"]) == ("topic", True)
        assert queues[name]["type"] == "quorum"
        assert rabbit_args(queues[name]) == {
            "x-queue-type": "quorum", "x-overflow": "reject-publish",
            "x-message-ttl": 2 ** level * 1000, "x-dead-letter-exchange": below,
            "x-dead-letter-strategy": "at-least-once"}
        prefix = "*." * (27 - level)
        assert bindings[(name, name)] == f"{prefix}1.#"
        assert bindings[(name, below)] == f"{prefix}0.#"
    assert bindings[("celery_delayed_delivery", "capture_quorum")] == "#.capture_quorum"
    assert rabbit_args(queues["capture_quorum"]) == {"x-queue-type": "quorum"}


def test_readme_lists_every_fixture() -> None:
    readme = (FIXTURES / "README.md").read_text()
    for path in FIXTURES.iterdir():
        if path.is_file() and path.name != "README.md":
            assert path.name in readme, path.name
