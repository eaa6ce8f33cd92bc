"""Canvas on the wire: chain/group/chord messages as Celery sends them, captures decoded."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery, chain, chord, group
from celeriac.app.request import Request, parse_request
from celeriac.canvas import maybe_signature
from celeriac.messages import Message
from celeriac.result import GroupResult

CAPTURE = Path(__file__).parents[1] / "fixtures" / "celery-wire-capture.txt"


@pytest.fixture
def app() -> Celery:
    app = Celery("canvas_wire", broker="memory://")

    @app.task(name="tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="tasks.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    @app.task(name="tasks.tsum")
    def tsum(xs: list[int]) -> int:
        return sum(xs)

    return app


def drain(app: Celery) -> list[Request]:
    deliveries = app.broker.receive(["celery"], owner="test", limit=10_000, timeout=0)
    return [parse_request(d.message, None) for d in deliveries]


def test_chain_publishes_first_task_with_reversed_chain(app: Celery) -> None:
    add, mul = app.tasks["tasks.add"], app.tasks["tasks.mul"]
    res = chain(add.s(1, 2), mul.s(3), mul.s(4)).apply_async()
    (call,) = drain(app)
    assert call.name == "tasks.add" and call.args == [1, 2]
    steps = call.embed["chain"]
    assert [s["args"] for s in steps] == [[4], [3]]  # next step last, as Celery stores it
    assert steps[0]["options"]["task_id"] == res.id
    assert steps[1]["options"]["task_id"] == res.parent.id
    assert call.id == res.parent.parent.id and res.parent.parent.parent is None


def test_group_publishes_batched_with_group_headers(app: Celery, monkeypatch: Any) -> None:
    add = app.tasks["tasks.add"]
    batches: list[int] = []
    original = app.broker.publish_many

    def spy(items: Any) -> None:
        items = list(items)
        batches.append(len(items))
        original(items)

    monkeypatch.setattr(app.broker, "publish_many", spy)
    res = group(add.s(i, i) for i in range(50)).apply_async()
    calls = sorted(drain(app), key=lambda c: c.headers["group_index"])
    assert batches == [50]
    assert [c.headers["group_index"] for c in calls] == list(range(50))
    assert {c.headers["group"] for c in calls} == {res.id}
    assert [c.id for c in calls] == [r.id for r in res.results]
    assert calls[7].args == [7, 7]


def test_chord_header_carries_body_with_ids_and_size(app: Celery) -> None:
    add, tsum = app.tasks["tasks.add"], app.tasks["tasks.tsum"]
    res = chord([add.s(1, 1), add.s(2, 2)])(tsum.s())
    calls = drain(app)
    assert len(calls) == 2
    gid = calls[0].headers["group"]
    for call in calls:
        body = call.embed["chord"]
        assert body["task"] == "tasks.tsum"
        assert body["options"]["task_id"] == res.id
        assert body["options"]["group_id"] == gid
        assert body["options"]["chord_size"] == 2
    assert res.parent.id == gid and len(res.parent.results) == 2


def test_group_result_save_and_restore_use_celerys_format(app: Celery) -> None:
    add = app.tasks["tasks.add"]
    res = group(add.s(0, 0), add.s(1, 1)).apply_async()
    res.save()
    stored = app.backend.get_group(res.id)
    assert stored == {"result": [[res.id, None],
                                 [[[r.id, None], None] for r in res.results]]}
    again = GroupResult.restore(res.id, app=app)
    assert again.id == res.id and [r.id for r in again.results] == [r.id for r in res.results]
    assert not again.ready() and again.completed_count() == 0


def captured(title: str) -> list[Message]:
    text = CAPTURE.read_text()
    section = text.split(f"### {title}", 1)[1].split("\n###", 1)[0].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith('{"body"')]
    return [Message.from_envelope(json.loads(ln)) for ln in lines]


def test_captured_chain_decodes_into_steps(app: Celery) -> None:
    (msg,) = captured("chain(add.s(1,2), mul.s(3), mul.s(4))")
    call = parse_request(msg, None)
    steps = [maybe_signature(s, app=app) for s in call.embed["chain"]]
    assert [(s.task, s.args) for s in steps] == [("tasks.mul", (4,)), ("tasks.mul", (3,))]
    assert all(re.fullmatch(r"[0-9a-f-]{36}", s.id or "") for s in steps)


def test_captured_chord_body_decodes(app: Celery) -> None:
    msgs = captured("chord([add.s(1,1), add.s(2,2)], tsum.s())")
    calls = [parse_request(m, None) for m in msgs]
    bodies = [maybe_signature(c.embed["chord"], app=app) for c in calls]
    assert {b.id for b in bodies} == {"1bcefe39-88f7-433e-8518-0f32e79fa04f"}
    assert {c.headers["group"] for c in calls} == {bodies[0].options["group_id"]}
    assert sorted(c.headers["group_index"] for c in calls) == [0, 1]


def test_batched_group_messages_equal_one_by_one_messages(app: Celery) -> None:
    from celeriac.app.publish import build_message
    from celeriac.canvas.publish import publish_members

    add, tsum = app.tasks["tasks.add"], app.tasks["tasks.tsum"]
    app.conf.task_routes = {"tasks.add": {"queue": "celery", "priority": 3}}
    members = [add.s(i, i).set(expires=60) for i in range(3)] + [add.si(9, 9)]
    header = group(members)
    header.freeze(chord=tsum.s().set(task_id="b"), parent_id="p")
    publish_members(app, header.tasks, {"root_id": "r"})
    got = {c.id: c for c in drain(app)}
    for member in header.tasks:
        opts = {"root_id": "r", **member.options, "task": add}
        expected, _, _, _ = build_message(app, "tasks.add", list(member.args), member.kwargs,
                                          opts.pop("task_id"), opts)
        call = got[member.id]
        skip = {"origin", "expires"}
        assert {k: v for k, v in call.headers.items() if k not in skip} == {
            k: v for k, v in expected.headers.items() if k not in skip}
        assert [call.args, call.kwargs, call.embed] == json.loads(expected.body)
        skip = {"delivery_tag", "expiration"}
        assert {k: v for k, v in call.properties.items() if k not in skip} == {
            k: v for k, v in expected.properties.items() if k not in skip}


def test_group_revoke_records_every_member_and_link_follows_celery(app: Celery) -> None:
    add = app.tasks["tasks.add"]
    g = group(add.s(1, 1), add.s(2, 2))
    g.link(add.s(100))
    g.link_error(add.s(200))
    res = g.apply_async()
    calls = sorted(drain(app), key=lambda c: c.headers["group_index"])
    assert [len(c.embed["callbacks"] or []) for c in calls] == [1, 0]
    assert calls[0].embed["callbacks"][0]["immutable"] is True
    assert all(c.embed["errbacks"][0]["args"] == [200] for c in calls)
    res.revoke()
    assert [r.state for r in res.results] == ["REVOKED", "REVOKED"]
    assert res.ready() and not res.successful()


def test_group_result_subclass_bound_to_an_app(app: Celery) -> None:
    """What ``app.GroupResult`` should return: Celery binds the class to the app."""
    bound = type("GroupResult", (GroupResult,), {"_default_app": app})
    res = group(app.tasks["tasks.add"].s(1, 1)).apply_async()
    res.save()
    again = bound.restore(res.id)
    assert again is not None and again.app is app and again.results[0].id == res.results[0].id
    assert bound("g", []).app is app
