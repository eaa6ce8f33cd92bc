"""Canvas signatures: building, composition, dict round-trip with real Celery, eager mode."""

from __future__ import annotations

import json

import pytest

from celeriac import Celery, Signature, chain, chord, group, signature
from celeriac.canvas import maybe_signature


@pytest.fixture
def app() -> Celery:
    app = Celery("canvas_sigs", broker="memory://")

    @app.task(name="tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="tasks.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    @app.task(name="tasks.tsum")
    def tsum(xs: list[int]) -> int:
        return sum(xs)

    @app.task(name="tasks.boom")
    def boom(*args: object) -> None:
        raise ValueError("boom")

    return app


def test_signature_fields_and_partials(app: Celery) -> None:
    add = app.tasks["tasks.add"]
    sig = add.s(2).set(countdown=5)
    assert sig == {"task": "tasks.add", "args": [2], "kwargs": {},
                   "options": {"countdown": 5}, "subtask_type": None, "immutable": False}
    assert sig.clone((1,)).args == (1, 2)
    assert add.si(2, 2).clone((1,)).args == (2, 2)
    assert sig.clone(kwargs={"y": 3}).kwargs == {"y": 3}
    assert sig.clone((3,))() == 5  # a partial called directly runs in-process
    by_name = signature("tasks.add", args=(1, 1), app=app)
    assert by_name.task == "tasks.add" and by_name.args == (1, 1)
    assert sig.args == (2,)  # clone left the original alone


def test_pipe_builds_chain_and_chord(app: Celery) -> None:
    add, tsum = app.tasks["tasks.add"], app.tasks["tasks.tsum"]
    c = add.s(1, 2) | add.s(3) | add.s(4)
    assert isinstance(c, chain) and [t.args for t in c.tasks] == [(1, 2), (3,), (4,)]
    c2 = c | (add.s(5) | add.s(6))
    assert isinstance(c2, chain) and len(c2.tasks) == 5
    g = group(add.s(i, i) for i in range(3))
    ch = g | tsum.s()
    assert isinstance(ch, chord) and len(ch.tasks) == 3 and ch.body.task == "tasks.tsum"
    ch2 = ch | add.s(1)
    assert isinstance(ch2, chord) and isinstance(ch2.body, chain)


def test_dict_forms_match_real_celery(app: Celery) -> None:
    from celery import Celery as RealCelery

    real = RealCelery("tasks", broker="memory://", set_as_current=False)

    @real.task(name="tasks.add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    @real.task(name="tasks.tsum", shared=False)
    def tsum(xs: list[int]) -> int:
        return sum(xs)

    mine_add, mine_tsum = app.tasks["tasks.add"], app.tasks["tasks.tsum"]
    cases = [
        (add.s(1, 2) | add.s(3), mine_add.s(1, 2) | mine_add.s(3)),
        (real_group(add), group(mine_add.s(0, 0), mine_add.s(1, 1))),
        (add.si(1, 1), mine_add.si(1, 1)),
    ]
    for theirs, mine in cases:
        assert json.loads(json.dumps(mine)) == json.loads(json.dumps(theirs))
    # chord: same keys; header/body are the same signatures
    from celery import chord as real_chord

    theirs_c = json.loads(json.dumps(real_chord([add.s(1, 1)], tsum.s())))
    mine_c = json.loads(json.dumps(chord([mine_add.s(1, 1)], mine_tsum.s())))
    assert theirs_c["subtask_type"] == mine_c["subtask_type"] == "chord"
    assert theirs_c["kwargs"]["header"] == mine_c["kwargs"]["header"]
    assert theirs_c["kwargs"]["body"] == mine_c["kwargs"]["body"]


def real_group(add: object) -> object:
    from celery import group as real_group_cls

    return real_group_cls(add.s(0, 0), add.s(1, 1))  # type: ignore[attr-defined]


def test_celery_built_dicts_become_our_types_and_back(app: Celery) -> None:
    from celery import Celery as RealCelery
    from celery import chord as real_chord
    from celery import signature as real_signature

    real = RealCelery("tasks", broker="memory://", set_as_current=False)

    @real.task(name="tasks.add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    wire = json.loads(json.dumps(add.s(1, 2) | add.s(3) | add.s(4)))
    mine = maybe_signature(wire, app=app)
    assert isinstance(mine, chain) and [t.args for t in mine.tasks] == [(1, 2), (3,), (4,)]
    wire_chord = json.loads(json.dumps(real_chord([add.s(1, 1), add.s(2, 2)], add.s(5))))
    mine_chord = maybe_signature(wire_chord, app=app)
    assert isinstance(mine_chord, chord) and len(mine_chord.tasks) == 2
    # and ours back into Celery's classes
    back = real_signature(json.loads(json.dumps(app.tasks["tasks.add"].s(1) | app.tasks[
        "tasks.add"].s(2))), app=real)
    assert type(back).__name__ == "_chain" and len(back.tasks) == 2


def test_link_and_link_error_on_any_signature(app: Celery) -> None:
    add = app.tasks["tasks.add"]
    sig = add.s(1, 1)
    sig.link(add.s(10))
    sig.on_error(add.si(0, 0))
    assert sig.options["link"][0].task == "tasks.add"
    assert sig.options["link_error"][0].immutable


def test_eager_chain_group_chord_chunks_map(app: Celery) -> None:
    app.conf.task_always_eager = True
    add, mul, tsum = (app.tasks[n] for n in ("tasks.add", "tasks.mul", "tasks.tsum"))
    res = (add.s(1, 2) | mul.s(3) | add.si(1, 1)).apply_async()
    assert res.get() == 2 and res.parent.get() == 9 and res.parent.parent.get() == 3
    assert group(add.s(i, i) for i in range(4)).apply_async().get() == [0, 2, 4, 6]
    assert chord([add.s(i, i) for i in range(4)])(tsum.s()).get() == 12
    assert (group(add.s(1, 1), add.s(2, 2)) | tsum.s()).delay().get() == 6
    assert add.chunks([(1, 1), (2, 2), (3, 3)], 2).apply_async().get() == [[2, 4], [6]]
    assert add.starmap([(1, 2), (3, 4)]).apply_async().get() == [3, 7]
    assert app.tasks["tasks.tsum"].map([[1], [2, 3]]).apply_async().get() == [1, 5]


def test_eager_chord_header_failure_is_a_chord_error(app: Celery) -> None:
    from celeriac.exceptions import ChordError

    app.conf.task_always_eager = True
    add, boom, tsum = (app.tasks[n] for n in ("tasks.add", "tasks.boom", "tasks.tsum"))
    res = chord([add.s(1, 1), boom.s()], tsum.s()).apply_async()
    assert res.failed()
    assert isinstance(res.result, ChordError) and "raised ValueError('boom')" in str(res.result)


def test_signature_is_a_plain_dict_for_json(app: Celery) -> None:
    add = app.tasks["tasks.add"]
    sig = add.s(1).set(link=[add.s(2)])
    decoded = json.loads(json.dumps(sig))
    again = Signature.from_dict(decoded, app=app)
    assert again == sig and again.options["link"][0]["task"] == "tasks.add"


def test_group_skew_spreads_countdowns_like_celery(app: Celery) -> None:
    """Celery's ``group.skew`` (canvas guide: ``add.chunks(...).group().skew(start=1,
    stop=10)()``): countdowns start, start + step... up to stop, then stop repeated."""
    add = app.tasks["tasks.add"]
    g = group(add.s(i, i) for i in range(12))
    assert g.skew(start=1, stop=10) is g
    assert [t["options"]["countdown"] for t in g.tasks] == [*range(1, 11), 10, 10]
    half = group(add.s(i, i) for i in range(5)).skew(start=0, stop=1, step=0.5)
    assert [t["options"]["countdown"] for t in half.tasks] == [0, 0.5, 1, 1, 1]
    pairs = [(i, i) for i in range(20)]
    chunked = add.chunks(pairs, 10).group().skew(start=1, stop=10)
    assert [t["options"]["countdown"] for t in chunked.tasks] == [1, 2]
    wire = json.loads(json.dumps(chunked))  # survives the message (a header, a chain step)
    assert [t["options"]["countdown"] for t in wire["kwargs"]["tasks"]] == [1, 2]
