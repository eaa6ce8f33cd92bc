"""Every field of a task message is validated once, up front (issue 21, point 2).

Table-driven over the envelope, every header, property and ``delivery_info``
key, the body and the canvas signatures in ``embed``: a message that cannot
run as written is dead-lettered on its first delivery with a reason naming the
field, and the task body never runs. Valid variants Celery accepts (nulls,
missing headers, protocol 1 bodies) still run.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from celeriac import Celery
from celeriac.app.request import parse_request
from celeriac.brokers.base import DECODE_ERROR
from celeriac.exceptions import DecodeError
from celeriac.messages import Message, task_message
from celeriac.worker.job import JobRunner
from celeriac.worker.leases import LeaseKeeper

SIG = {"task": "t.next", "args": [], "kwargs": {}, "options": {}, "subtask_type": None,
       "immutable": False}


def base_message() -> Message:
    return task_message("t.add", "tid-1", (1, 2), {})


def with_headers(**changes: Any) -> Message:
    m = base_message()
    headers = {**m.headers, **changes}
    for key, value in changes.items():
        if value is _DROP:
            del headers[key]
    return Message(headers, m.properties, m.body, m.content_type, m.content_encoding)


def with_properties(**changes: Any) -> Message:
    m = base_message()
    return Message(m.headers, {**m.properties, **changes}, m.body, m.content_type,
                   m.content_encoding)


def with_info(**changes: Any) -> Message:
    m = base_message()
    info = {**m.properties["delivery_info"], **changes}
    return Message(m.headers, {**m.properties, "delivery_info": info}, m.body)


def with_body(payload: Any) -> Message:
    m = base_message()
    return Message(m.headers, m.properties, json.dumps(payload).encode(), m.content_type)


def with_embed(**embed: Any) -> Message:
    return with_body([[1, 2], {}, {"callbacks": None, "errbacks": None, "chain": None,
                                   "chord": None, **embed}])


_DROP = object()

#: (field named in the reason, malformed message)
MALFORMED: list[tuple[str, Message]] = [
    # envelope
    ("content-type", Message(base_message().headers, base_message().properties,
                             base_message().body, ["application/json"])),  # type: ignore[arg-type]
    ("content-encoding", Message(base_message().headers, base_message().properties,
                                 base_message().body, "application/json", 5)),  # type: ignore[arg-type]
    ("content-encoding", Message(base_message().headers, base_message().properties,
                                 base_message().body, "application/json", "rot13")),
    ("content-encoding", Message(base_message().headers, base_message().properties,
                                 base_message().body, "application/json", "no-such-codec")),
    ("body", with_body({"x": 1})),
    ("body", with_body([1, 2])),
    ("body.args", with_body([5, {}, None])),
    ("body.kwargs", with_body([[], [1], None])),
    ("embed", with_body([[], {}, 5])),
    # headers
    ("headers.task", with_headers(task=_DROP)),
    ("headers.task", with_headers(task=5)),
    ("headers.id", with_headers(id="")),
    ("headers.lang", with_headers(lang=5)),
    ("headers.shadow", with_headers(shadow=["x"])),
    ("headers.eta", with_headers(eta="tomorrow")),
    ("headers.eta", with_headers(eta=10**400)),  # too large for a float: no OverflowError
    ("headers.expires", with_headers(expires=[1])),
    ("headers.group", with_headers(group=5)),
    ("headers.group_index", with_headers(group_index="0")),
    ("headers.group_index", with_headers(group_index=-1)),
    ("headers.retries", with_headers(retries="x")),
    ("headers.retries", with_headers(retries=-1)),
    ("headers.timelimit", with_headers(timelimit=["x", None])),
    ("headers.timelimit", with_headers(timelimit=5)),
    ("headers.timelimit", with_headers(timelimit=[1, 2, 3])),
    ("headers.root_id", with_headers(root_id=5)),
    ("headers.parent_id", with_headers(parent_id=[])),
    ("headers.argsrepr", with_headers(argsrepr=5)),
    ("headers.kwargsrepr", with_headers(kwargsrepr={})),
    ("headers.origin", with_headers(origin=5)),
    ("headers.ignore_result", with_headers(ignore_result="yes")),
    ("headers.replaced_task_nesting", with_headers(replaced_task_nesting="1")),
    ("headers.stamped_headers", with_headers(stamped_headers="x")),
    ("headers.stamps", with_headers(stamps=[])),
    ("headers.compression", with_headers(compression=5)),
    # properties
    ("properties.correlation_id", with_properties(correlation_id=5)),
    ("properties.reply_to", with_properties(reply_to=5)),
    ("properties.delivery_mode", with_properties(delivery_mode="2")),
    ("properties.priority", with_properties(priority="high")),
    ("properties.delivery_tag", with_properties(delivery_tag=[1])),
    ("properties.expiration", with_properties(expiration="soon")),
    ("properties.delivery_info", with_properties(delivery_info="x")),
    ("properties.delivery_info.exchange", with_info(exchange=5)),
    ("properties.delivery_info.routing_key", with_info(routing_key=5)),
    ("properties.delivery_info.redelivered", with_info(redelivered="no")),
    ("properties.delivery_info.priority", with_info(priority="high")),
    # embed: the canvas
    ("embed.callbacks", with_embed(callbacks=5)),
    ("embed.callbacks[0]", with_embed(callbacks=[1])),
    ("embed.callbacks[0].options", with_embed(callbacks=[{**SIG, "options": 5}])),
    ("embed.callbacks[0].options.countdown",
     with_embed(callbacks=[{**SIG, "options": {"countdown": "x"}}])),
    ("embed.callbacks[0].options.link[0]",
     with_embed(callbacks=[{**SIG, "options": {"link": [1]}}])),
    ("embed.errbacks[0]", with_embed(errbacks=["x"])),
    ("embed.chain", with_embed(chain=5)),
    ("embed.chain[0]", with_embed(chain=["x"])),
    ("embed.chain[0].args", with_embed(chain=[{**SIG, "args": "x"}])),
    ("embed.chain[0].kwargs.tasks[0]",
     with_embed(chain=[{**SIG, "task": "celery.group", "subtask_type": "group",
                        "kwargs": {"tasks": [1]}}])),
    ("embed.chord", with_embed(chord=5)),
    ("embed.chord.kwargs", with_embed(chord={**SIG, "kwargs": 5})),
    ("embed.chord.immutable", with_embed(chord={**SIG, "immutable": "yes"})),
]

#: messages Celery accepts loosely; they must run
VALID: list[tuple[str, Message]] = [
    ("minimal headers", Message({"task": "t.add", "id": "tid-1"}, {},
                                json.dumps([[1, 2], {}, None]).encode())),
    ("null retries and timelimit", with_headers(retries=None, timelimit=None)),
    ("timelimit of nulls", with_headers(timelimit=[None, None])),
    ("numeric eta", with_headers(eta=1.0)),
    ("no priority, no delivery_info", with_properties(priority=None, delivery_info=None)),
    ("protocol 1 body", with_body({"args": [1, 2], "kwargs": {}})),
    ("one link as an object", with_embed(callbacks=SIG)),
]


@pytest.fixture
def app() -> Celery:
    app = Celery("fields", broker="memory://", backend="memory://", set_as_current=False)
    app.ran = []  # type: ignore[attr-defined]

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        app.ran.append((x, y))  # type: ignore[attr-defined]
        return x + y

    @app.task(name="t.next")
    def next_step(*args: Any) -> None:
        return None

    return app


def deliver(app: Celery, message: Message) -> Any:
    app.broker.publish(message, "celery")
    [delivery] = app.broker.receive(["celery"], owner="w", limit=1, timeout=1)
    keeper = LeaseKeeper(app.broker, interval=60)
    keeper.hold([delivery])
    runner = JobRunner(app, keeper, "w@test")
    job = runner.prepare(delivery, set())
    if job is not None:
        runner.execute(job)
    return job


@pytest.mark.parametrize(("field", "message"), MALFORMED,
                         ids=[f"{f}-{i}" for i, (f, _) in enumerate(MALFORMED)])
def test_malformed_field_is_dead_lettered_on_first_delivery(app: Celery, field: str,
                                                            message: Message) -> None:
    assert deliver(app, message) is None
    [letter] = app.broker.dead_letters()
    assert letter.reason.startswith(f"{DECODE_ERROR}: {field}: "), letter.reason
    assert letter.delivery_count == 1
    assert app.ran == []  # type: ignore[attr-defined]
    assert app.broker.stats("celery").ready == 0


@pytest.mark.parametrize(("what", "message"), VALID, ids=[w for w, _ in VALID])
def test_loose_but_valid_messages_run(app: Celery, what: str, message: Message) -> None:
    assert deliver(app, message) is not None
    assert app.ran == [(1, 2)]  # type: ignore[attr-defined]
    assert app.broker.dead_letters() == []


def test_the_request_is_the_task_request(app: Celery) -> None:
    """One object per delivery: what the tracer pushes is what parse_request built."""
    seen = []

    @app.task(name="t.seen", bind=True)
    def seen_task(self: Any) -> None:
        seen.append(self.request)

    message = task_message("t.seen", "tid-9", (), {}, headers={"tenant": "acme"})
    app.broker.publish(message, "celery")
    [delivery] = app.broker.receive(["celery"], owner="w", limit=1, timeout=1)
    keeper = LeaseKeeper(app.broker, interval=60)
    keeper.hold([delivery])
    runner = JobRunner(app, keeper, "w@test")
    job = runner.prepare(delivery, set())
    assert job is not None
    runner.execute(job)
    assert seen == [job.request]
    request = seen[0]
    assert (request.id, request.task, request.hostname, request.tenant) == (
        "tid-9", "t.seen", "w@test", "acme")
    assert request.delivery_info["routing_key"] == "celery"
    assert request.called_directly is False and request.is_eager is False


def test_parse_request_names_the_field() -> None:
    # (a broker stores the effective priority of a publish, 0-9: 300 can only come raw)
    for value in ("high", 300, -1, True):
        with pytest.raises(DecodeError, match=r"^properties\.priority: expected an integer"):
            parse_request(with_properties(priority=value))


@pytest.mark.parametrize("value", [["x"], {"a": 1}, 5])
def test_a_non_text_id_or_name_reads_as_none(app: Celery, value: Any) -> None:
    """The consumer checks revocations by id before validation: a list as ``id`` once
    crashed every child that leased it (TypeError: unhashable), in a loop."""
    message = Message({"id": value, "task": value}, {}, b"[]")
    assert message.task_id is None and message.task_name is None
    assert deliver(app, message) is None
    [letter] = app.broker.dead_letters()
    assert letter.reason.startswith(f"{DECODE_ERROR}: headers.task: "), letter.reason
