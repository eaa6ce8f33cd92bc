"""The chord join (celeriac.canvas.join): ordering, size sources, failures, late completers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from celeriac import Celery, chord
from celeriac.app.context import Context
from celeriac.app.request import parse_request
from celeriac.brokers.memory.results import MemoryResultStore
from celeriac.canvas.join import on_header_done


@pytest.fixture
def app() -> Celery:
    app = Celery("canvas_join", broker="memory://")

    @app.task(name="tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="tasks.tsum")
    def tsum(xs: list[int]) -> int:
        return sum(xs)

    return app


def header_contexts(app: Celery, n: int) -> tuple[Any, list[Context]]:
    add, tsum = app.tasks["tasks.add"], app.tasks["tasks.tsum"]
    res = chord([add.s(i, i) for i in range(n)])(tsum.s())
    calls = app.broker.receive(["celery"], owner="t", limit=n, timeout=0)
    ctxs = []
    for d in calls:
        call = parse_request(d.message, None)
        ctxs.append(Context(id=call.id, group=call.headers["group"], root_id=call.id,
                            group_index=call.headers["group_index"], chord=call.embed["chord"]))
    return res, sorted(ctxs, key=lambda c: c.group_index)


def published_bodies(app: Celery) -> list[Any]:
    return [parse_request(d.message, None)
            for d in app.broker.receive(["celery"], owner="t2", limit=100, timeout=0)]


def test_body_published_once_with_results_in_header_order(app: Celery) -> None:
    res, ctxs = header_contexts(app, 5)
    task = SimpleNamespace(app=app)
    for ctx in reversed(ctxs):  # finish in reverse order
        on_header_done(task, ctx, ctx.group_index * 10, failed=False)  # type: ignore[arg-type]
    on_header_done(task, ctxs[0], 0, failed=False)  # a duplicate report changes nothing
    (body,) = published_bodies(app)
    assert body.id == res.id and body.args == [[0, 10, 20, 30, 40]]
    assert body.headers["parent_id"] == ctxs[0].id


def test_size_from_celerys_s_key_when_the_body_lacks_it(app: Celery) -> None:
    _, ctxs = header_contexts(app, 2)
    store = app.backend
    for ctx in ctxs:
        ctx.chord = {**ctx.chord, "options": {k: v for k, v in ctx.chord["options"].items()
                                              if k != "chord_size"}}
    store._set_raw(f"{store.group_key(ctxs[0].group)}.s", "2", None)
    task = SimpleNamespace(app=app)
    for ctx in ctxs:
        on_header_done(task, ctx, 1, failed=False)  # type: ignore[arg-type]
    (body,) = published_bodies(app)
    assert body.args == [[1, 1]]


class RedeliveryStore(MemoryResultStore):
    """The crash-recovery contract proposed in docs/canvas.md: a repeated call for an index
    already recorded gets the complete list again until ``chord_clear``."""

    def chord_add(self, group_id: str, index: int, meta: Any,
                  size: int) -> list[dict[str, Any]] | None:
        with self._lock:
            parts = self._chords.get(group_id, ({}, None))[0]
            repeat = index in parts and len(parts) == size
        if repeat:
            return [dict(p) for p in self._decoded(group_id, size)]
        return super().chord_add(group_id, index, meta, size)

    def _decoded(self, group_id: str, size: int) -> list[dict[str, Any]]:
        from celeriac.results.store import decode_meta

        parts = self._chords[group_id][0]
        return [decode_meta(parts[i]) or {} for i in range(size)]


def test_redelivered_completer_publishes_the_body_it_died_before_sending(app: Celery,
                                                                        monkeypatch: Any) -> None:
    app._backend = RedeliveryStore()
    res, ctxs = header_contexts(app, 3)
    task = SimpleNamespace(app=app)
    for ctx in ctxs[:2]:
        on_header_done(task, ctx, 1, failed=False)  # type: ignore[arg-type]

    class Died(BaseException):
        pass

    def die(*args: Any, **kwargs: Any) -> None:
        raise Died

    with monkeypatch.context() as patch:  # the completer dies before publishing the body
        patch.setattr(app.broker, "publish", die)
        with pytest.raises(Died):
            on_header_done(task, ctxs[2], 1, failed=False)  # type: ignore[arg-type]
    assert published_bodies(app) == []
    on_header_done(task, ctxs[2], 1, failed=False)  # type: ignore[arg-type]  # redelivered
    (body,) = published_bodies(app)
    assert body.id == res.id and body.args == [[1, 1, 1]]
    on_header_done(task, ctxs[2], 1, failed=False)  # type: ignore[arg-type]  # join cleared
    assert published_bodies(app) == []


def test_completer_does_not_republish_a_body_that_already_ran(app: Celery) -> None:
    from celeriac.results.meta import store_result

    app._backend = RedeliveryStore()
    res, ctxs = header_contexts(app, 2)
    task = SimpleNamespace(app=app)
    store_result(app, res.id, 2, "SUCCESS")  # the body ran; its completer died before clearing
    for ctx in ctxs:
        on_header_done(task, ctx, 1, failed=False)  # type: ignore[arg-type]
    assert published_bodies(app) == []
    assert app.backend.chord_add(ctxs[0].group, 0, {}, 2) is None  # the join state was cleared


def test_redelivered_header_task_recovers_a_join_whose_completer_died(app: Celery,
                                                                       monkeypatch: Any) -> None:
    """With the stores' return-once chord_add: recovery from the saved header group."""
    from celeriac.results.meta import store_result

    res, ctxs = header_contexts(app, 3)
    task = SimpleNamespace(app=app)
    for ctx in ctxs:
        store_result(app, ctx.id, ctx.group_index + 1, "SUCCESS")  # as the tracer does first
    for ctx in ctxs[:2]:
        on_header_done(task, ctx, ctx.group_index + 1, failed=False)  # type: ignore[arg-type]

    class Died(BaseException):
        pass

    def die(*args: Any, **kwargs: Any) -> None:
        raise Died

    with monkeypatch.context() as patch:
        patch.setattr(app.broker, "publish", die)
        with pytest.raises(Died):
            on_header_done(task, ctxs[2], 3, failed=False)  # type: ignore[arg-type]
    on_header_done(task, ctxs[1], 2, failed=False)  # type: ignore[arg-type]  # not redelivered
    assert published_bodies(app) == []
    ctxs[2].delivery_info = {"redelivered": True}
    on_header_done(task, ctxs[2], 3, failed=False)  # type: ignore[arg-type]
    (body,) = published_bodies(app)
    assert body.id == res.id and body.args == [[1, 2, 3]]
    for ctx in ctxs:  # later redeliveries find the body applied
        ctx.delivery_info = {"redelivered": True}
        on_header_done(task, ctx, 0, failed=False)  # type: ignore[arg-type]
    assert published_bodies(app) == []


def test_recovery_waits_while_header_tasks_are_unfinished(app: Celery) -> None:
    from celeriac.results.meta import store_result

    _, ctxs = header_contexts(app, 2)
    task = SimpleNamespace(app=app)
    store_result(app, ctxs[0].id, 1, "SUCCESS")
    ctxs[0].delivery_info = {"redelivered": True}
    on_header_done(task, ctxs[0], 1, failed=False)  # type: ignore[arg-type]
    on_header_done(task, ctxs[0], 1, failed=False)  # type: ignore[arg-type]
    assert published_bodies(app) == []
