"""celeriac's own AMQP frame codec (:mod:`celeriac.brokers.amqp.frames`) against py-amqp's.

The hot paths render publishes and acks and parse deliveries without py-amqp's
generic codec; every byte must be what py-amqp writes and every decoded value what
py-amqp reads, for kombu's captured task properties and for every field-table type.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from struct import unpack_from
from types import SimpleNamespace
from typing import Any

import pytest

amqp = pytest.importorskip("amqp")

from amqp import spec  # noqa: E402
from amqp.exceptions import FrameSyntaxError  # noqa: E402
from amqp.method_framing import frame_writer  # noqa: E402
from amqp.serialization import decode_properties_basic, dumps  # noqa: E402

from celeriac.brokers.amqp import frames, wire  # noqa: E402
from celeriac.messages import task_message  # noqa: E402

FIXTURE = json.loads((Path(__file__).parents[1] / "fixtures" / "amqp-task-properties.json")
                     .read_text())

EVERY_TYPE: dict[str, Any] = {
    "text": "plain", "unicode": "é ü 漢", "surrogate": "\udcff", "bytes": b"\xff\x00raw",
    "long text": "é ü 漢 \udcff " * 8, "6f1b3f0e-4d7e-4f50-9a4c-1f2e3d4c5b6a": "x" * 40,
    "int": 7, "negative": -3, "big": 2**40, "small": -(2**40), "limit": 2147483647,
    "float": 1.5, "true": True, "false": False, "none": None,
    "list": [1, "a", [None, 2.5], {"k": "v"}], "tuple": (1, 2), "empty": {}, "nested":
    {"a": {"b": {"c": 1}}}, "decimal": Decimal("-12.345"), "when": datetime(2020, 1, 2, 3, 4, 5),
}


def captured_properties() -> list[dict[str, Any]]:
    out = []
    for kind in ("classic", "quorum"):
        for entry in FIXTURE[kind]["messages"]:
            if isinstance(entry.get("properties"), dict):
                props = dict(entry["properties"])
                props.pop("headers", None)
                props["application_headers"] = entry["properties"].get("headers") or {}
                out.append({k: v for k, v in props.items() if k in dict(frames.PROPERTY_ORDER)})
    assert out
    return out


PROPERTY_SETS = [
    *captured_properties(),
    {"content_type": "application/json", "content_encoding": "utf-8", "delivery_mode": 2,
     "priority": 0, "correlation_id": "c", "reply_to": "r", "expiration": "100",
     "message_id": "m", "timestamp": 1700000000, "type": "t", "user_id": "guest",
     "app_id": "a", "cluster_id": "x", "application_headers": EVERY_TYPE},
    {}, {"application_headers": {}}, {"priority": 9}, {"content_type": ""},
    dict(wire.encode(task_message("tests.add", "id-1", (1, "é"), {"k": [1]}), 3).properties),
]


@pytest.mark.parametrize("props", PROPERTY_SETS)
def test_properties_are_py_amqps_bytes_and_values(props: dict[str, Any]) -> None:
    expected = amqp.Message(b"", **props)._serialize_properties()
    assert frames.encode_properties(props) == expected
    decoded, end = frames.decode_properties(expected, 0)
    assert (decoded, end) == decode_properties_basic(expected, 0)


@pytest.mark.parametrize("props", PROPERTY_SETS)
def test_a_decode_of_remembered_entries_equals_py_amqps_and_shares_nothing_mutable(
        props: dict[str, Any]) -> None:
    raw = amqp.Message(b"", **props)._serialize_properties()
    first, _ = frames.decode_properties(raw, 0)
    again, end = frames.decode_properties(raw, 0)  # the short entries now come remembered
    assert (again, end) == decode_properties_basic(raw, 0)
    for key, value in (first.get("application_headers") or {}).items():
        if isinstance(value, (dict, list)):
            assert again["application_headers"][key] is not value


def test_an_unknown_table_value_is_refused_as_py_amqp_refuses_it() -> None:
    with pytest.raises(FrameSyntaxError):
        frames.encode_table({"x": object()})


@pytest.mark.parametrize("body", [b"", b"x" * 100, bytes(range(256)) * 1200])
@pytest.mark.parametrize("route", [("", "celery"), ("celery_delayed_27", "0.1.é")])
def test_a_publish_is_the_frames_py_amqp_writes(body: bytes, route: tuple[str, str]) -> None:
    written: list[bytes] = []
    conn = SimpleNamespace(frame_max=4096, bytes_sent=0)
    write = frame_writer(conn, SimpleNamespace(write=lambda b: written.append(bytes(b))))
    msg = amqp.Message(body, **PROPERTY_SETS[-1])
    write(1, 3, spec.Basic.Publish, dumps("Bssbb", (0, *route, False, False)), msg)
    mine = frames.publish_frames(3, *route, frames.encode_properties(msg.properties), body,
                                 4096)
    assert mine == b"".join(written)


def acks_in(data: bytes) -> list[tuple[int, int, int]]:
    """(method, delivery tag, flag) of each ack/reject frame in ``data``."""
    out, off = [], 0
    while off < len(data):
        kind, channel, size = unpack_from(">BHI", data, off)
        assert (kind, channel, size, data[off + 7 + size]) == (1, 5, 13, 0xCE)
        cls, method, tag, flag = unpack_from(">HHQB", data, off + 7)
        assert cls == 60
        out.append((method, tag, flag))
        off += 8 + size
    return out


def test_acks_batch_into_one_multiple_ack_only_below_every_unsettled_delivery() -> None:
    assert acks_in(frames.ack_frames(5, [3, 1, 2])) == [(80, 3, 1)]
    # 4 stays unsettled: 1-3 in one multiple ack, 5 and 6 one by one
    assert acks_in(frames.ack_frames(5, [6, 1, 2, 3, 5], unsettled_below=4)) == [
        (80, 3, 1), (80, 5, 0), (80, 6, 0)]
    assert acks_in(frames.ack_frames(5, [2], unsettled_below=1)) == [(80, 2, 0)]
    assert acks_in(frames.ack_frames(5, [7], [4], unsettled_below=4)) == [(80, 7, 0),
                                                                          (90, 4, 0)]
