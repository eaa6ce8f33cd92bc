"""Canvas end to end on the memory broker with an in-process threaded worker.

Dogfooding: the app and the worker are celeriac's pytest fixtures (``celery_app``,
``celery_worker``, configured by ``celery_worker_pool``/``celery_worker_parameters``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery, chain, chord, group, signature
from celeriac.exceptions import ChordError
from celeriac.messages import Message
from celeryproc import wait_until

CAPTURE = Path(__file__).parents[1] / "fixtures" / "celery-wire-capture.txt"
T = 10  # seconds: generous get() timeout


class Seen:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[Any] = []

    def add(self, item: Any) -> None:
        with self.lock:
            self.items.append(item)


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture(scope="session")
def celery_worker_pool() -> str:
    return "threads"


@pytest.fixture(scope="session")
def celery_worker_parameters() -> dict[str, Any]:
    return {"concurrency": 4}


@pytest.fixture
def app(seen: Seen, celery_app: Celery, celery_worker: Any) -> Iterator[Celery]:
    app = celery_app
    assert app.broker_url == "memory://"

    @app.task(name="tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="tasks.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    @app.task(name="tasks.tsum")
    def tsum(xs: list[int]) -> int:
        seen.add(("tsum", list(xs)))
        return sum(xs)

    @app.task(name="tasks.boom")
    def boom(*args: Any) -> None:
        raise ValueError("boom")

    @app.task(name="tasks.record")
    def record(*args: Any) -> str:
        seen.add(("record", args))
        return "recorded"

    @app.task(name="tasks.on_err")
    def on_err(request: Any, exc: BaseException, traceback: Any) -> None:
        seen.add(("on_err", request.id, repr(exc)))

    @app.task(name="tasks.replaced", bind=True)
    def replaced(self: Any, x: int) -> None:
        raise self.replace(app.tasks["tasks.add"].s(x, 100))

    @app.task(name="tasks.replaced_by_chain", bind=True)
    def replaced_by_chain(self: Any, x: int) -> None:
        raise self.replace(app.tasks["tasks.add"].s(x, 1) | app.tasks["tasks.mul"].s(10))

    @app.task(name="tasks.replaced_by_group", bind=True)
    def replaced_by_group(self: Any, x: int) -> None:
        raise self.replace(group(app.tasks["tasks.add"].s(x, 0), app.tasks["tasks.add"].s(x, 1)))

    yield app


def t(app: Celery, name: str) -> Any:
    return app.tasks[f"tasks.{name}"]


def test_chain_passes_results_and_parents_walk_back(app: Celery) -> None:
    res = (t(app, "add").s(1, 2) | t(app, "mul").s(3) | t(app, "add").s(4)).apply_async()
    assert res.get(timeout=T) == 13
    assert res.parent.get(timeout=T) == 9 and res.parent.parent.get(timeout=T) == 3


def test_chain_immutable_step_ignores_previous_result(app: Celery) -> None:
    res = chain(t(app, "add").s(1, 2), t(app, "add").si(10, 10), t(app, "mul").s(2))()
    assert res.get(timeout=T) == 40


def test_chain_error_stops_and_calls_link_error(app: Celery, seen: Seen) -> None:
    c = t(app, "add").s(1, 1) | t(app, "boom").s() | t(app, "record").s()
    res = c.apply_async(link_error=t(app, "on_err").s())
    with pytest.raises(ValueError):
        res.parent.get(timeout=T)
    failed_id = res.parent.id
    wait_until(lambda: ("on_err", failed_id, "ValueError('boom')") in seen.items, T)
    assert res.parent.failed() and res.state == "PENDING"
    assert [i for i in seen.items if i[0] == "record"] == []
    with pytest.raises(ValueError):  # the last result re-raises its failed parent
        res.get(timeout=T)


def test_group_results_in_order_and_state(app: Celery) -> None:
    res = group(t(app, "add").s(i, i) for i in range(20)).apply_async()
    assert res.get(timeout=T) == [2 * i for i in range(20)]
    assert res.ready() and res.successful() and not res.failed() and not res.waiting()
    assert res.completed_count() == 20 and res.join(timeout=T)[3] == 6


def test_group_failure_propagates(app: Celery) -> None:
    res = group(t(app, "add").s(1, 1), t(app, "boom").s()).apply_async()
    with pytest.raises(ValueError):
        res.get(timeout=T)
    assert res.failed() and not res.successful() and res.completed_count() == 1
    values = res.get(timeout=T, propagate=False)
    assert values[0] == 2 and isinstance(values[1], ValueError)
    # like Celery's join: a failure is raised once the members before it are done,
    # without waiting for later ones (this one is never consumed)
    stuck = group(t(app, "boom").s(), t(app, "add").s(1, 1).set(queue="nobody")).delay()
    with pytest.raises(ValueError):
        stuck.get(timeout=T)


def test_chord_body_gets_ordered_results_once(app: Celery, seen: Seen) -> None:
    res = chord([t(app, "add").s(i, i) for i in range(30)])(t(app, "tsum").s())
    assert res.get(timeout=T) == sum(2 * i for i in range(30))
    assert [i for i in seen.items if i[0] == "tsum"] == [("tsum", [2 * i for i in range(30)])]
    res2 = (group(t(app, "add").s(1, 1), t(app, "add").s(2, 2)) | t(app, "tsum").s()).delay()
    assert res2.get(timeout=T) == 6


def test_chord_header_failure_fails_body_and_calls_errback(app: Celery, seen: Seen) -> None:
    body = t(app, "tsum").s()
    body.link_error(t(app, "on_err").s())
    res = chord([t(app, "add").s(1, 1), t(app, "boom").s()], body).apply_async()
    with pytest.raises(ChordError) as info:
        res.get(timeout=T, follow_parents=False)
    bad = res.parent.results[1].id
    assert str(info.value) == f"Dependency {bad} raised ValueError('boom')"
    errs = [i for i in seen.items if i[0] == "on_err"]
    assert len(errs) == 1 and errs[0][1] == res.id and "ChordError" in errs[0][2]


def test_chunks_map_starmap_run_as_builtin_tasks(app: Celery) -> None:
    add = t(app, "add")
    assert add.chunks([(i, i) for i in range(5)], 2).apply_async().get(timeout=T) == [
        [0, 2], [4, 6], [8]]
    assert add.starmap([(1, 2), (3, 4)]).delay().get(timeout=T) == [3, 7]
    assert t(app, "tsum").map([[1, 2], [3]]).apply_async().get(timeout=T) == [3, 3]


def test_link_and_link_error_on_a_signature(app: Celery, seen: Seen) -> None:
    ok = t(app, "add").s(2, 3)
    ok.link(t(app, "record").s("after"))
    ok.apply_async().get(timeout=T)
    bad = t(app, "boom").s()
    bad.link_error(t(app, "on_err").s())
    res = bad.apply_async()
    with pytest.raises(ValueError):
        res.get(timeout=T)
    wait_until(lambda: ("record", (5, "after")) in seen.items, T)
    wait_until(lambda: any(i[0] == "on_err" and i[1] == res.id for i in seen.items), T)


def test_task_replace(app: Celery, seen: Seen) -> None:
    assert t(app, "replaced").delay(1).get(timeout=T) == 101
    res = (t(app, "add").s(1, 1) | t(app, "replaced").s() | t(app, "mul").s(2)).delay()
    assert res.get(timeout=T) == 204
    res = (t(app, "replaced_by_chain").s(4) | t(app, "add").s(1)).delay()
    assert res.get(timeout=T) == 51
    res = (t(app, "replaced_by_group").s(2) | t(app, "tsum").s()).delay()
    assert res.get(timeout=T) == 5
    res = chord([t(app, "replaced").s(1), t(app, "replaced_by_group").s(2)], t(app, "record").s())()
    assert res.get(timeout=T) == "recorded"
    assert ("record", ([101, [2, 3]],)) in seen.items


def test_nesting_chain_inside_group_inside_chord(app: Celery) -> None:
    add, mul, tsum = t(app, "add"), t(app, "mul"), t(app, "tsum")
    header = group(add.s(1, 1) | mul.s(10), add.s(2, 2), add.s(3, 3) | add.s(1) | mul.s(2))
    res = chord(header, tsum.s()).apply_async()
    assert res.get(timeout=T) == 20 + 4 + 14
    nested = (add.s(1, 1) | group(mul.s(2), mul.s(3)) | tsum.s() | add.s(1)).delay()
    assert nested.get(timeout=T) == 11
    inner = chord([add.s(1, 1), add.s(2, 2)], tsum.s())
    outer = chord([inner, add.s(10, 0), group(add.s(0, 1), add.s(0, 2))], tsum.s()).delay()
    assert outer.get(timeout=T) == 6 + 10 + 1 + 2


def test_seed_002_good_chain(app: Celery, seen: Seen) -> None:
    @app.task(name="seed.fetch_page")
    def fetch_page(url: str) -> str:
        return f"<html>{url}</html>"

    @app.task(name="seed.parse_page")
    def parse_page(page: str) -> dict[str, int]:
        return {"length": len(page)}

    @app.task(name="seed.store_page_info", ignore_result=True)
    def store_page_info(info: dict[str, int], url: str) -> None:
        seen.add(("stored", url, info))

    url = "http://example.com/"
    res = (fetch_page.s(url) | parse_page.s() | store_page_info.s(url))()
    assert res.parent.get(timeout=T) == {"length": len(f"<html>{url}</html>")}
    wait_until(lambda: ("stored", url, {"length": 32}) in seen.items, T)


def test_celery_built_messages_and_dicts_run(app: Celery) -> None:
    from celery import Celery as RealCelery

    text = CAPTURE.read_text()
    for title in ("chain(add.s(1,2), mul.s(3), mul.s(4))", "group(add.s(0,0), add.s(1,1))"):
        section = text.split(f"### {title}", 1)[1].split("\n###", 1)[0]
        for line in section.splitlines():
            if line.startswith('{"body"'):
                app.broker.publish(Message.from_envelope(json.loads(line)), "celery")
    assert app.AsyncResult("00b9c410-b7f7-465b-8d7f-155d7951ed53").get(timeout=T) == 36
    assert app.AsyncResult("b01b99b4-e36b-4fe1-bc7b-32aadb780812").get(timeout=T) == 0
    real = RealCelery("tasks", broker="memory://", set_as_current=False)

    @real.task(name="tasks.add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    @real.task(name="tasks.tsum", shared=False)
    def tsum(xs: list[int]) -> int:
        return sum(xs)

    from celery import chord as real_chord

    built = json.loads(json.dumps(real_chord([add.s(1, 1), add.s(2, 2)], tsum.s() | add.s(5))))
    assert signature(built, app=app).apply_async().get(timeout=T) == 11


def test_the_same_canvas_applied_twice_runs_twice(app: Celery) -> None:
    add, tsum = t(app, "add"), t(app, "tsum")
    for canvas in (chord([add.s(1, 1), add.s(2, 2)], tsum.s()), add.s(1, 1) | add.s(1),
                   group(add.s(1, 1), add.s(2, 2))):
        first, second = canvas.delay(), canvas.delay()
        assert first.id != second.id
        assert first.get(timeout=T) == second.get(timeout=T)
