"""Golden wire tests: the captured Celery 5.7 messages decode, and we encode the same shape.

The envelopes are parsed out of ``tests/fixtures/celery-wire-capture.txt`` (a
copy of ``shared/reference/celery-wire-capture.txt``), so the fixtures are
the real bytes Celery wrote to Redis. Tagged JSON is compared with kombu's own
``kombu.utils.json`` (installed for tests only).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery
from celeriac.app.request import parse_request
from celeriac.exceptions import ContentDisallowed, DecodeError
from celeriac.messages import EMPTY_EMBED, Message, task_message
from celeriac.serialization import JSON, PICKLE, accepted_types, dumps, json_dumps, json_loads
from needs import need

kombu_json = need("kombu.utils.json")

#: a copy of shared/reference/celery-wire-capture.txt, kept with the tests
CAPTURE = Path(__file__).parents[1] / "fixtures" / "celery-wire-capture.txt"
ACCEPT_JSON = accepted_types(["json"])


def _capture_text() -> str:
    return CAPTURE.read_text()


def captured_messages() -> list[tuple[str, dict[str, Any]]]:
    """``(raw envelope line, decoded body)`` for every stored task message in the capture."""
    lines = _capture_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.startswith("{\"body\": ") or "\"headers\": {\"lang\"" not in line:
            continue
        following = lines[i + 1].strip() if i + 1 < len(lines) else ""
        assert following.startswith("decoded body: "), following
        out.append((line, json.loads(following[len("decoded body: "):])))
    return out


def captured_unacked() -> list[dict[str, Any]]:
    """Envelopes inside ``[envelope, exchange, routing_key]`` unacked-hash values."""
    out = []
    for line in _capture_text().splitlines():
        if line.startswith("[{\"body\": "):
            env, exchange, routing_key = json.loads(line)
            assert (exchange, routing_key) == ("", "celery")
            out.append(env)
    return out


CAPTURED = captured_messages()


def test_capture_holds_all_part_a_messages() -> None:
    # add, apply_async with options, chain, group x2, chord x2
    assert len(CAPTURED) == 7
    assert len(captured_unacked()) == 1


@pytest.mark.parametrize(("raw", "body"), CAPTURED, ids=[str(i) for i in range(len(CAPTURED))])
def test_decode_captured_message(raw: str, body: list[Any]) -> None:
    env = json.loads(raw)
    message = Message.loads(raw)
    call = parse_request(message, ACCEPT_JSON)
    assert call.name == env["headers"]["task"]
    assert call.id == env["headers"]["id"] == env["properties"]["correlation_id"]
    assert call.args == body[0]
    assert call.kwargs == body[1]
    assert call.embed == body[2]
    assert call.retries == 0
    assert call.timelimit == (None, None)
    assert message.delivery_tag == env["properties"]["delivery_tag"]
    assert message.priority == env["properties"]["priority"]
    if env["headers"]["eta"]:
        eta = dt.datetime.fromisoformat(env["headers"]["eta"]).timestamp()
        assert call.eta_at == pytest.approx(eta)
    else:
        assert call.eta_at is None


@pytest.mark.parametrize(("raw", "body"), CAPTURED, ids=[str(i) for i in range(len(CAPTURED))])
def test_envelope_roundtrip_is_identical(raw: str, body: list[Any]) -> None:
    """Decoding and re-encoding a captured envelope gives back the same JSON."""
    message = Message.loads(raw)
    assert json.loads(message.dumps()) == json.loads(raw)
    assert message.dumps() == raw  # same key order and separators as kombu


def _encode_like(env: dict[str, Any], body: list[Any]) -> Message:
    """Build with task_message() the call that produced a captured envelope."""
    h, p = env["headers"], env["properties"]
    embed = body[2]
    extra = {k: v for k, v in h.items() if k not in _STANDARD_HEADERS}
    return task_message(
        h["task"], h["id"], body[0], body[1],
        eta=dt.datetime.fromisoformat(h["eta"]) if h["eta"] else None,
        expires=dt.datetime.fromisoformat(h["expires"]) if h["expires"] else None,
        group_id=h["group"], group_index=h["group_index"], root_id=h["root_id"],
        parent_id=h["parent_id"], callbacks=embed["callbacks"], errbacks=embed["errbacks"],
        chain=embed["chain"], chord=embed["chord"], headers=extra or None,
        priority=p["priority"], reply_to=p["reply_to"],
        queue=p["delivery_info"]["routing_key"],
    )


_STANDARD_HEADERS = list(task_message("t", "i").headers)


@pytest.mark.parametrize(("raw", "body"), CAPTURED, ids=[str(i) for i in range(len(CAPTURED))])
def test_encode_equivalent_message(raw: str, body: list[Any]) -> None:
    env = json.loads(raw)
    ours = _encode_like(env, body).to_envelope()
    assert list(ours) == list(env)  # body, content-encoding, content-type, headers, properties
    assert list(ours["headers"]) == list(env["headers"])
    assert list(ours["properties"]) == list(env["properties"])
    for key, value in env["headers"].items():
        if key != "origin":
            assert ours["headers"][key] == value, key
    assert ours["headers"]["origin"].startswith("gen")
    for key in ("correlation_id", "reply_to", "delivery_mode", "delivery_info", "priority",
                "body_encoding"):
        assert ours["properties"][key] == env["properties"][key], key
    if "expiration" in env["properties"]:
        assert ours["properties"]["expiration"].isdigit()
    uuid.UUID(ours["properties"]["delivery_tag"])
    assert ours["content-type"] == env["content-type"]
    assert ours["content-encoding"] == env["content-encoding"]
    assert json.loads(base64.b64decode(ours["body"])) == body
    assert ours["body"] == env["body"]  # kombu's json.dumps separators: byte-identical body


def test_captured_apply_async_options_map_to_headers() -> None:
    """The capture with countdown/expires/priority/headers/link/link_error, rebuilt via the app."""
    raw, body = CAPTURED[1]
    env = json.loads(raw)
    app = Celery("tasks", broker="memory://", backend="memory://", set_as_current=False)

    @app.task(name="tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="tasks.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    @app.task(name="tasks.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    add.apply_async((1, 2), countdown=60, expires=3600, priority=5, headers={"x-custom": "v"},
                    link=mul.s(10), link_error=tsum.si([1]))
    [delivery] = app.broker.receive(["celery"], owner="t", limit=1, timeout=0,
                                    ) or _release_delayed(app)
    got = delivery.message.to_envelope()
    assert list(got["headers"]) == list(env["headers"])
    assert list(got["properties"]) == list(env["properties"])
    assert got["headers"]["x-custom"] == "v"
    assert got["properties"]["priority"] == 5
    assert 3_590_000 <= int(got["properties"]["expiration"]) <= 3_600_000
    eta = dt.datetime.fromisoformat(got["headers"]["eta"])
    expires = dt.datetime.fromisoformat(got["headers"]["expires"])
    assert eta.utcoffset() == dt.timedelta(0)
    assert 3535 <= (expires - eta).total_seconds() <= 3541
    assert json.loads(base64.b64decode(got["body"])) == body
    app.close()


def _release_delayed(app: Celery) -> list[Any]:
    """Make the countdown message visible by reading it back with the clock moved forward."""
    broker = app.broker
    real_now = broker.now
    broker.now = lambda: real_now() + 120  # type: ignore[method-assign]
    try:
        return broker.receive(["celery"], owner="t", limit=1, timeout=0)
    finally:
        broker.now = real_now  # type: ignore[method-assign]


def test_unacked_envelope_from_capture_decodes() -> None:
    [env] = captured_unacked()
    call = parse_request(Message.from_envelope(env), ACCEPT_JSON)
    assert call.name == "tasks.add" and call.args == [3, 4]
    assert call.eta_at == pytest.approx(
        dt.datetime.fromisoformat("2026-11-21T13:42:52.754952+00:00").timestamp())


# -- tagged JSON, compared with kombu -------------------------------------------------
VALUES = [
    dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
    dt.datetime(2024, 1, 2, 3, 4, 5, 123456),
    dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    dt.date(2024, 1, 2),
    dt.time(3, 4, 5, 6),
    Decimal("1.10"),
    Decimal("-0.000001"),
    uuid.UUID("497c5b68-1ddf-4630-8a14-c788cdf9a6fa"),
    b"abc",
    b"\xff\x00\x10",
    {"nested": [dt.date(2020, 2, 29), {"u": uuid.UUID(int=1)}]},
    (1, "two", 3.0, None, True),
    "\u00e9\u4e2d",
]


@pytest.mark.parametrize("value", VALUES, ids=[type(v).__name__ + str(i)
                                              for i, v in enumerate(VALUES)])
def test_tagged_json_matches_kombu(value: Any) -> None:
    ours = json_dumps(value)
    theirs = kombu_json.dumps(value)
    assert ours == theirs
    assert json_loads(theirs) == kombu_json.loads(theirs)
    assert kombu_json.loads(ours) == json_loads(ours)
    restored = json_loads(ours)
    if not isinstance(value, tuple):
        assert restored == value
        assert type(restored) is type(value)


def test_set_is_not_serializable_like_kombu() -> None:
    with pytest.raises(TypeError):
        kombu_json.dumps({1, 2})
    with pytest.raises(TypeError):
        json_dumps({1, 2})


def test_message_body_with_tagged_values_decodes_in_kombu() -> None:
    when = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    message = task_message("t", "i", [when, Decimal("2.5")], {"u": uuid.UUID(int=7)})
    args, kwargs, embed = kombu_json.loads(message.body)
    assert args == [when, Decimal("2.5")]
    assert kwargs == {"u": uuid.UUID(int=7)}
    assert embed == EMPTY_EMBED
    call = parse_request(message, ACCEPT_JSON)
    assert call.args == [when, Decimal("2.5")] and call.kwargs == {"u": uuid.UUID(int=7)}


# -- accept_content and malformed input ------------------------------------------------
def _pickled(accept: list[str]) -> Any:
    message = task_message("t", "i", [1], {}, serializer="pickle")
    assert message.content_type == PICKLE
    assert message.content_encoding == "binary"
    return parse_request(Message.loads(message.dumps()), accepted_types(accept))


def test_pickle_refused_by_default() -> None:
    with pytest.raises(ContentDisallowed):
        _pickled(["json"])


def test_pickle_accepted_when_listed() -> None:
    assert _pickled(["json", "pickle"]).args == [1]
    assert _pickled(["application/x-python-serialize"]).args == [1]


def test_accept_content_refuses_json_if_not_listed() -> None:
    message = task_message("t", "i", [1])
    with pytest.raises(ContentDisallowed):
        parse_request(message, accepted_types(["pickle"]))


def _env(**changes: Any) -> dict[str, Any]:
    env = json.loads(CAPTURED[0][0])
    env.update(changes)
    return env


def _b64(payload: Any) -> str:
    return base64.b64encode(json.dumps(payload).encode()).decode()


MALFORMED = {
    "not-json": "this is not json",
    "json-array": "[1, 2, 3]",
    "truncated": CAPTURED[0][0][:80],
    "bad-base64": json.dumps(_env(body="!!!not base64!!!")),
    "base64-of-garbage": json.dumps(_env(body=base64.b64encode(b"\x00\xffgarbage").decode())),
    "two-element-body": json.dumps(_env(body=_b64([[5, 5], {}]))),
    "body-is-object": json.dumps(_env(body=_b64({"nope": 1}))),
    "args-not-list": json.dumps(_env(body=_b64([5, {}, {}]))),
    "kwargs-not-dict": json.dumps(_env(body=_b64([[5], [], {}]))),
    "no-task-header": json.dumps(_env(headers={"id": "x"})),
    "no-id-header": json.dumps(_env(headers={"task": "tasks.add"})),
    "headers-not-object": json.dumps(_env(headers=[1, 2])),
    "bad-eta": json.dumps(_env(headers={"task": "t", "id": "i", "eta": "yesterday"})),
    "bad-timelimit": json.dumps(_env(headers={"task": "t", "id": "i", "timelimit": 5})),
    "bad-retries": json.dumps(_env(headers={"task": "t", "id": "i", "retries": "many"})),
    "bad-expires": json.dumps(_env(headers={"task": "t", "id": "i", "expires": [1]})),
    "body-not-text": json.dumps(_env(body=12345)),
}


@pytest.mark.parametrize("raw", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_input_raises_decode_error(raw: str) -> None:
    with pytest.raises((DecodeError, ContentDisallowed)):
        parse_request(Message.loads(raw), ACCEPT_JSON)


def test_unknown_content_type_is_refused() -> None:
    env = _env()
    env["content-type"] = "application/x-yaml"
    with pytest.raises(ContentDisallowed):
        parse_request(Message.from_envelope(env), accepted_types(["json", "application/x-yaml"]))


def test_minimal_hand_made_message_is_accepted() -> None:
    """Capture §K: headers {task, id} only and a raw (not base64) body run on Celery."""
    env = {"body": "[[4, 4], {}, {}]", "content-type": JSON, "content-encoding": "utf-8",
           "headers": {"task": "tasks.add", "id": "abc"},
           "properties": {"delivery_tag": "t", "delivery_info": {}}}
    call = parse_request(Message.from_envelope(env), ACCEPT_JSON)
    assert (call.name, call.id, call.args, call.kwargs) == ("tasks.add", "abc", [4, 4], {})
    assert call.embed == EMPTY_EMBED


def test_protocol_one_body_is_accepted() -> None:
    payload, ctype, enc = dumps({"task": "tasks.add", "id": "x", "args": [1], "kwargs": {}})
    message = Message({"task": "tasks.add", "id": "x"}, {}, payload, ctype, enc)
    assert parse_request(message, ACCEPT_JSON).args == [1]


def test_timelimit_header_is_hard_then_soft() -> None:
    message = task_message("t", "i", time_limit=10, soft_time_limit=5)
    assert message.headers["timelimit"] == [10, 5]
    assert parse_request(message, ACCEPT_JSON).timelimit == (10, 5)


def test_standard_headers_constant_matches_task_message() -> None:
    from celeriac.messages import STANDARD_HEADERS

    assert tuple(task_message("t", "i").headers) == STANDARD_HEADERS
    assert list(json.loads(CAPTURED[0][0])["headers"]) == list(STANDARD_HEADERS)


# -- compression, as kombu does it --------------------------------------------------------
@pytest.mark.parametrize("method", ["gzip", "zlib", "bzip2", "lzma"])
def test_compressed_message_matches_kombu(method: str) -> None:
    compression = need("kombu.compression")
    message = task_message("t", "i", [1, "two"], {"k": 3}, compression=method)
    ctype = message.headers["compression"]
    assert list(message.headers)[-1] == "compression"
    assert kombu_json.loads(compression.decompress(message.body, ctype)) == [
        [1, "two"], {"k": 3}, EMPTY_EMBED]
    theirs, their_type = compression.compress(b'[[5], {}, {}]', method)
    assert their_type == ctype
    env = {"body": base64.b64encode(theirs).decode(), "content-type": JSON,
           "content-encoding": "utf-8", "headers": {"task": "t", "id": "x", "compression": ctype},
           "properties": {"body_encoding": "base64"}}
    assert parse_request(Message.from_envelope(env), ACCEPT_JSON).args == [5]


def test_decompression_bomb_and_garbage_are_refused() -> None:
    import zlib

    from celeriac import serialization

    bomb = zlib.compress(b"[" + b" " * 5_000_000 + b"]")
    with pytest.raises(DecodeError, match="exceeds"):
        serialization.decompress(bomb, "application/x-gzip", limit=1_000_000)
    message = Message({"task": "t", "id": "i", "compression": "application/x-gzip"}, {},
                      b"not compressed")
    with pytest.raises(DecodeError):
        parse_request(message, ACCEPT_JSON)
    with pytest.raises(ContentDisallowed):
        parse_request(message.with_headers(compression="application/x-rar"), ACCEPT_JSON)


def test_a_circular_reference_is_refused_as_pythons_json_refuses_it() -> None:
    """``json_dumps`` encodes with a C encoder made once, without the markers Python's
    encoder makes per call; a circular value falls back to it, and its error."""
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference detected"):
        json_dumps(loop)
    shared = {"a": 1}
    assert json_dumps([shared, shared, {"x": shared}]) == kombu_json.dumps(
        [shared, shared, {"x": shared}])  # the same object twice is not a cycle


def test_uuid4_text_is_a_random_uuid4() -> None:
    from celeriac.messages import uuid4_text

    ids = [uuid4_text() for _ in range(300)]  # more than one batch of 64
    assert len(set(ids)) == 300
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32", "utf-16-le"])
def test_tagged_values_decode_from_every_json_encoding(encoding: str) -> None:
    """``json_loads`` skips its per-object hook for text without a ``__type__`` key; a
    tag spelled with escapes, or text in UTF-16/32, still goes through it."""
    value = [dt.date(2024, 1, 2), {"plain": 1}, "\u00e9"]
    text = json_dumps(value)
    assert json_loads(text.encode(encoding)) == value
    escaped = '{"\\u005f_type__": "uuid", "__value__": {"hex": "0000000000000000000000000000000a"}}'
    assert json_loads(escaped.encode(encoding)) == uuid.UUID(int=10)
    assert json_loads('[1, {"a": "\\u00e9"}]'.encode(encoding)) == [1, {"a": "\u00e9"}]
