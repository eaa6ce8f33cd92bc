"""The worker's size check bounded by the envelope it read, and orjson's exact decoding.

A worker skips measuring a message (body plus headers as JSON) when the envelope it was
parsed from is at most ``task_message_max_size / ENVELOPE_GROWTH`` bytes: these tests
check that bound on hostile envelopes (numbers that re-encode longer, non-ASCII text,
compact separators), that a message over the limit is still refused when delivered by
Redis, and that :func:`~celeriac.serialization.loads_exact` decodes as ``json.loads``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celeriac import Celery, serialization
from celeriac.brokers import base
from celeriac.brokers.redis.replies import parse_receive
from celeriac.exceptions import MessageTooLarge
from celeriac.message_size import ENVELOPE_GROWTH, check_size, message_size
from celeriac.messages import Message, encode_envelope, parse_envelope, task_message
from celeriac.worker.intake import Intake, Refusal

EXAMPLES = int(os.environ.get("CELERIAC_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES * 2, deadline=None, derandomize=EXAMPLES <= 100,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = (st.none() | st.booleans() | st.integers() | st.text(max_size=20)
           | st.floats(allow_nan=False) | st.sampled_from([1e15, -9e15, 1e-4, 1e16, 0.5]))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner,
                                                               max_size=6),
    max_leaves=30)
#: how the envelope's producer wrote its JSON: compact or not, escaped or raw UTF-8
writers = st.sampled_from([
    lambda v: json.dumps(v, separators=(",", ":"), ensure_ascii=False),
    lambda v: json.dumps(v, separators=(",", ":")),
    lambda v: json.dumps(v),
])


def _envelope(headers: Any, body: Any, base64_body: bool) -> dict[str, Any]:
    props: dict[str, Any] = {"body_encoding": "base64"} if base64_body else {}
    return {"body": body, "content-type": "application/json", "content-encoding": "utf-8",
            "headers": headers, "properties": props}


@FUZZ
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=8), json_values, writers)
def test_a_parsed_message_measures_at_most_envelope_growth_times_its_envelope(
        headers: dict[str, Any], body: Any, write: Any) -> None:
    raw = write(_envelope(headers, body, False)).encode("utf-8")
    assert message_size(parse_envelope(raw)) <= ENVELOPE_GROWTH * len(raw)


@pytest.mark.parametrize("text", [
    # numbers Python writes longer than they were read ("1e15" -> "1000000000000000.0")
    '{"headers":{"a":[' + ",".join(["1e15"] * 500) + ']},"body":""}',  # 4x
    '{"headers":{"a":[9E15,-1e15,1e-4,1e9,0e0,[],{}]},"body":[1e15,1e15,1e15]}',
    # non-ASCII text written raw, escaped when measured ("é" -> "\\u00e9")
    '{"headers":{"é":"éééééééééééééééééééééé","😀":"😀😀😀😀😀"},"body":"éé"}',
    # separators only
    '{"headers":{"a":[[],[],[],[],[],[],[],[[]]],"b":{"":{},"c":{}}},"body":{"x":[0,0,0]}}',
])
def test_hostile_envelopes_stay_under_the_bound(text: str) -> None:
    raw = text.encode("utf-8")
    message = parse_envelope(raw)
    assert message.headers  # parsed, not the garbage fallback
    assert message_size(message) <= ENVELOPE_GROWTH * len(raw)


def _delivered(message: Message) -> base.Delivery:
    """``message`` as the Redis broker delivers it (envelope size included)."""
    env = encode_envelope(message, "celery", 0).encode()
    batch = b"1 tok 1 0 %d\n" % len(env) + env
    [delivery], _ = parse_receive([b"1000.0", b"", batch], ["celery"], "w", 30)
    assert delivery.envelope_size == len(env)
    return delivery


@pytest.fixture
def app() -> Celery:
    app = Celery("sizes", broker="memory://", backend="memory://", set_as_current=False)

    @app.task(name="sizes.echo")
    def echo(value: Any) -> Any:
        return value

    return app


def test_a_redis_delivery_over_the_limit_is_refused_as_oversized(app: Celery) -> None:
    app.conf.task_message_max_size = 20_000
    intake = Intake(app, "w")
    small = _delivered(task_message("sizes.echo", "ok", ("x" * 100,), {}))
    assert intake.open(small)[2].id == "ok"
    # near the limit: the envelope does not bound it, so it is measured (and fits)
    near = _delivered(task_message("sizes.echo", "near", ("x" * 12_000,), {}))
    assert near.envelope_size is not None and near.envelope_size * ENVELOPE_GROWTH > 20_000
    assert intake.open(near)[2].id == "near"
    # over the limit: refused with the reason, in headers as in the body
    for message in (task_message("sizes.echo", "big-body", ("x" * 30_000,), {}),
                    task_message("sizes.echo", "big-head", (), {},
                                 headers={"note": "y" * 30_000})):
        with pytest.raises(Refusal) as caught:
            intake.open(_delivered(message))
        assert caught.value.reason == base.OVERSIZED
        assert "exceeds task_message_max_size" in caught.value.detail


def test_check_size_measures_without_an_envelope_size() -> None:
    message = task_message("sizes.echo", "i", ("x" * 5_000,), {})
    check_size(message, 100_000, envelope=1_000)  # bounded: 5 x 1,000 <= 100,000
    with pytest.raises(MessageTooLarge):
        check_size(message, 4_000)
    with pytest.raises(MessageTooLarge):  # the envelope is too large to bound it
        check_size(message, 4_000, envelope=1_000)
    check_size(message, 0, envelope=None)  # no limit


@FUZZ
@given(json_values, st.sampled_from([json.dumps, lambda v: json.dumps(v, ensure_ascii=False)]))
def test_loads_exact_decodes_as_json_loads(value: Any, write: Any) -> None:
    text = write(value)
    expected = json.loads(text)
    for given_text in (text, text.encode("utf-8")):
        got = serialization.loads_exact(given_text)
        assert json.dumps(got) == json.dumps(expected)


@pytest.mark.parametrize("text", [
    "[18446744073709551616, -9223372036854775809, 123456789012345678901234567890]",
    '{"a": 9999999999999999999, "b": [0.1234567890123456789012]}',
    "[NaN, Infinity, -Infinity, 1e400]",
    '"\\ud800"',
])
def test_loads_exact_keeps_what_orjson_would_not(text: str) -> None:
    expected = json.loads(text)
    got = serialization.loads_exact(text.encode())
    assert repr(got) == repr(expected)  # 18446744073709551616, not 1.8446744073709552e+19
