"""Property-based fuzzing of everything that decodes untrusted bytes (issue 19, point 5).

Hypothesis generates envelopes, headers, bodies, signed payloads, seals and stored
results; the properties are that decoding never crashes with anything but the
documented errors, that a worker's intake either accepts a message or
dead-letters it with a known reason (never raises, never runs a refused body),
and that reading a result never imports a module.

The suite runs a bounded number of examples per property (``CELERIAC_FUZZ_EXAMPLES``,
default 40); run longer on demand, e.g.::

    CELERIAC_FUZZ_EXAMPLES=20000 .venv/bin/pytest -m fuzz -p no:xdist --timeout=0 -q

Any failure is a bug: Hypothesis prints the smallest example that shows it.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celeriac import Celery, serialization
from celeriac.brokers import base
from celeriac.brokers.redis import replies as redis_scripts
from celeriac.exceptions import (
    ContentDisallowed,
    DecodeError,
    ResultDecodeError,
    SecurityError,
)
from celeriac.messages import Message, parse_envelope, task_message
from celeriac.results.meta import exception_from_dict
from celeriac.results.store import decode_task_meta, is_revoked
from celeriac.security.auth import AUTH_CONTENT_TYPE, SEPARATOR, unpack
from celeriac.security.seal import SEAL_HEADER
from celeriac.worker.job import JobRunner
from celeriac.worker.leases import LeaseKeeper

pytestmark = pytest.mark.fuzz

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
EXAMPLES = int(os.environ.get("CELERIAC_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 100,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

TAGS = ["datetime", "date", "time", "decimal", "uuid", "bytes", "base64", "other"]
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
tagged = st.fixed_dictionaries({"__type__": st.sampled_from(TAGS), "__value__": scalars})
json_values = st.recursive(
    scalars | tagged,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=12)
#: header names the worker reads, plus anything
header_names = st.sampled_from(["task", "id", "eta", "expires", "retries", "timelimit",
                                "group", "group_index", "root_id", "parent_id", "shadow",
                                "compression", "stamps", "stamped_headers", "argsrepr",
                                "ignore_result", "replaced_task_nesting", SEAL_HEADER,
                                "lang"]) | st.text(max_size=10)
prop_names = st.sampled_from(["priority", "delivery_info", "correlation_id", "reply_to",
                              "delivery_mode", "body_encoding", "delivery_tag"])


def dumps(value: Any) -> str:
    return json.dumps(value, default=str, allow_nan=True)


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    saved, disabled = dict(serialization._SERIALIZERS), set(serialization._DISABLED)
    yield
    serialization._SERIALIZERS.clear()
    serialization._SERIALIZERS.update(saved)
    serialization._DISABLED.clear()
    serialization._DISABLED.update(disabled)


# -- envelopes, as every broker parses them ---------------------------------------------------
@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode)
       | json_values.map(lambda v: dumps(v).encode()))
def test_envelope_parsers_never_crash(raw: bytes) -> None:
    """Every broker parses stored envelopes with ``parse_envelope`` (Redis through its
    reply parser, which re-exports it)."""
    for parse in (parse_envelope, redis_scripts.parse_envelope):
        message = parse(raw)
        assert isinstance(message, Message)
    try:
        Message.loads(raw)
    except DecodeError:
        pass


@FUZZ
@given(st.dictionaries(st.sampled_from(["body", "content-type", "content-encoding",
                                        "headers", "properties"]), json_values, max_size=5))
def test_from_envelope_raises_only_decode_error(env: dict[str, Any]) -> None:
    try:
        Message.from_envelope(env)
    except DecodeError:
        pass


@FUZZ
@given(st.lists(st.tuples(st.integers(1, 2), st.integers(0, 5), st.integers(0, 5),
                          json_values.map(lambda v: dumps(v).encode())), max_size=3))
def test_redis_receive_batches_parse(entries: list[tuple[int, int, int, bytes]]) -> None:
    """The ``RECEIVE`` script's reply format, with any stored envelope inside."""
    batch = b"".join(b"%d tok%d %d %d %d\n" % (q, i, dc, lc, len(env)) + env
                     for i, (q, dc, lc, env) in enumerate(entries))
    deliveries, _ = redis_scripts.parse_receive([b"1000.0", b"", batch], ["a", "b"], "w", 30)
    assert len(deliveries) == len(entries)


# -- the worker's intake ---------------------------------------------------------------------
_APPS: dict[str, Celery] = {}


def _app(**conf: Any) -> Celery:
    """One app per configuration for the whole module (examples share it)."""
    key = repr(sorted(conf.items()))
    app = _APPS.get(key)
    if app is None:
        app = Celery("fuzz", broker="memory://", backend="memory://", set_as_current=False)
        app.conf.update(conf)
        app.ran = []  # type: ignore[attr-defined]
        app.task(name="t.add")(lambda *a, **k: app.ran.append(a))  # type: ignore[attr-defined]
        _APPS[key] = app
    auth = conf.get("task_serializer") == "auth" and "auth" not in serialization._SERIALIZERS
    if auth or (conf.get("security_seal") and getattr(app, "_security", None) is None):
        app.setup_security()  # again for auth: the registry is restored after each test
    return app


REASONS = {base.DECODE_ERROR, base.UNREGISTERED, base.CONTENT_DISALLOWED, base.OVERSIZED,
           base.UNSIGNED, base.BAD_SIGNATURE, base.REPLAYED, base.WORKER_LOST}


def _intake(app: Celery, message: Message) -> None:
    """Publish, receive and prepare one message: accepted (then run) or dead-lettered."""
    app.broker.purge("celery")
    app.broker.purge_dead_letters()
    app.ran.clear()  # type: ignore[attr-defined]
    app.broker.publish(message, "celery")
    deliveries = app.broker.receive(["celery"], owner="fuzz", limit=1, timeout=0)
    if not deliveries:  # a message with a future ETA in its properties waits in the broker
        return
    [delivery] = deliveries
    keeper = LeaseKeeper(app.broker, interval=60)
    keeper.hold([delivery])
    runner = JobRunner(app, keeper, "w@fuzz")
    job = runner.prepare(delivery, set())
    letters = app.broker.dead_letters()
    if job is None:
        assert all(letter.reason.split(":", 1)[0] in REASONS for letter in letters), letters
        assert app.ran == []  # type: ignore[attr-defined]
    else:
        assert letters == []
        runner.execute(job)


def _mutate(message: Message, headers: dict[str, Any], props: dict[str, Any],
            body: bytes | None, content_type: str | None) -> Message:
    return Message({**message.headers, **headers}, {**message.properties, **props},
                   message.body if body is None else body,
                   message.content_type if content_type is None else content_type,
                   message.content_encoding)


bodies = (st.none() | st.binary(max_size=80)
          | json_values.map(lambda v: dumps(v).encode())
          | st.tuples(json_values, json_values, json_values).map(lambda v: dumps(v).encode()))
content_types = st.none() | st.sampled_from(["application/json", AUTH_CONTENT_TYPE,
                                             "application/x-python-serialize", "text/plain",
                                             "application/x-celeriac-encrypted"])


@FUZZ
@given(st.dictionaries(header_names, json_values, max_size=4),
       st.dictionaries(prop_names, json_values, max_size=2), bodies, content_types)
def test_worker_intake_never_crashes(headers: dict[str, Any], props: dict[str, Any],
                                     body: bytes | None, content_type: str | None) -> None:
    app = _app(task_message_max_size=2000)
    _intake(app, _mutate(task_message("t.add", "fz", (1, 2), {}), headers, props, body,
                         content_type))


@FUZZ
@given(st.dictionaries(header_names, json_values, max_size=3), bodies, content_types,
       st.dictionaries(st.sampled_from(["v", "kid", "ts", "nonce", "sig", "enc", "ct", "ce",
                                        "reprs"]), json_values, max_size=6))
def test_sealed_worker_intake_never_crashes(headers: dict[str, Any], body: bytes | None,
                                            content_type: str | None,
                                            seal_changes: dict[str, Any]) -> None:
    app = _app(security_seal=True, security_key=str(FIXTURES / "test-signing-key.pem"),
               security_certificate=str(FIXTURES / "test-signing-cert.pem"),
               security_cert_store=str(FIXTURES / "test-signing-cert.pem"),
               security_encryption_keys=["ZmDfcTF7_60GrrY167zsiPd67pEvs0aGOv2oasOM1Pg="])
    from celeriac.security.setup import security_of

    sealer = security_of(app).sealer  # type: ignore[union-attr]
    assert sealer is not None
    sealed = sealer.seal(task_message("t.add", "fz", (1, 2), {}))
    seal = {**sealed.headers[SEAL_HEADER], **seal_changes}
    _intake(app, _mutate(sealed, {**headers, SEAL_HEADER: seal}, {}, body, content_type))


@FUZZ
@given(st.binary(max_size=200) | st.lists(st.binary(max_size=40), max_size=6).map(
    lambda parts: base64.b64encode(SEPARATOR.join(parts))))
def test_auth_payloads_raise_only_documented_errors(payload: bytes) -> None:
    app = _app(task_serializer="auth", accept_content=["auth"],
               security_key=str(FIXTURES / "test-signing-key.pem"),
               security_certificate=str(FIXTURES / "test-signing-cert.pem"),
               security_cert_store=str(FIXTURES / "test-signing-cert.pem"))
    security = app._security  # type: ignore[attr-defined]
    try:
        unpack(payload)
        security.serializer.loads(payload)
    except (DecodeError, SecurityError, ContentDisallowed):
        pass


# -- results ----------------------------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=200) | json_values.map(lambda v: dumps(v).encode())
       | st.fixed_dictionaries({"status": st.sampled_from(["SUCCESS", "FAILURE", "RETRY"]),
                                "result": json_values}).map(lambda v: dumps(v).encode()))
def test_result_decoding_never_crashes(raw: bytes) -> None:
    is_revoked(raw)
    try:
        meta = decode_task_meta("fz", raw)
    except ResultDecodeError:
        return
    assert meta is not None


@FUZZ
@given(st.fixed_dictionaries({"exc_type": json_values | st.sampled_from(
    ["system", "Popen", "ValueError", "os.system", "OSError", "__import__"]),
    "exc_module": json_values | st.sampled_from(["os", "subprocess", "builtins",
                                                 "celeriac_fuzz_canary", "pickle"]),
    "exc_message": json_values}))
def test_stored_exceptions_never_import_or_build_arbitrary_classes(data: dict[str, Any]) -> None:
    before = set(sys.modules)
    exc = exception_from_dict(data)
    assert isinstance(exc, Exception)
    assert set(sys.modules) - before == set()
    assert type(exc).__module__ in ("builtins", "celeriac.exceptions")


def test_an_envelope_keeps_integers_past_64_bits_exact() -> None:
    """orjson reads integers past 64 bits as floats; such an envelope takes the stdlib
    parser, as Celery's json does, so the values stay exact."""
    big, small = 2**64, -(2**63) - 1
    envelope = {"body": "", "content-encoding": "utf-8", "content-type": "application/json",
                "headers": {"task": "t.x", "id": "i", "big": big, "small": small},
                "properties": {"priority": 0}}
    message = redis_scripts.parse_envelope(json.dumps(envelope).encode())
    assert (message.headers["big"], message.headers["small"]) == (big, small)
    assert type(message.headers["big"]) is int
