"""The rule of ``worker/redelivery.py`` through the worker's own ``JobRunner.prepare``:
which redelivered messages are acknowledged without running (their outcome stored) and
which run again (at least once). The memory broker and result store stand for any;
the end-to-end cases with real worker processes are in
``tests/acceptance/test_redelivered_done.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celery, states
from celeriac.app.task import Task
from celeriac.exceptions import WorkerLostError
from celeriac.messages import Message, task_message
from celeriac.results.meta import store_result
from celeriac.worker.job import JobRunner
from celeriac.worker.leases import LeaseKeeper


class Hooked(Task):
    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        return None


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("redelivery", broker="memory://", backend="memory://")

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="t.hooked", base=Hooked)
    def hooked() -> None:
        return None

    @app.task(name="t.quiet", ignore_result=True)
    def quiet() -> None:
        return None

    yield app
    app.close()


def prepare(app: Celery, message: Message, *, redelivered: bool) -> tuple[Any, JobRunner]:
    """Publish, lease, (lose the lease once: redelivered), and prepare as a worker does."""
    app.broker.publish(message, "celery")
    [delivery] = app.broker.receive(["celery"], owner="gone", limit=1, timeout=1)
    if redelivered:
        assert app.broker.expire_owner("gone") == 1
        [delivery] = app.broker.receive(["celery"], owner="w", limit=1, timeout=1)
        assert delivery.redelivered and delivery.lost_count == 1
    keeper = LeaseKeeper(app.broker, interval=60)
    keeper.hold([delivery])
    runner = JobRunner(app, keeper, "w@test")
    return runner.prepare(delivery, set()), runner


def settled(app: Celery) -> bool:
    return app.broker.stats("celery").ready == 0 and app.broker.stats("celery").leased == 0


def test_a_redelivered_success_is_acknowledged_without_running(app: Celery) -> None:
    store_result(app, "t1", 3, states.SUCCESS)
    job, runner = prepare(app, task_message("t.add", "t1", (1, 2), {}), redelivered=True)
    assert job is None and runner.done_before.count == 1
    assert settled(app)


def test_a_final_failure_too(app: Celery) -> None:
    store_result(app, "t1", ValueError("boom"), states.FAILURE)
    job, runner = prepare(app, task_message("t.add", "t1", (1, 2), {}), redelivered=True)
    assert job is None and runner.done_before.count == 1


def test_a_first_delivery_runs_whatever_is_stored(app: Celery) -> None:
    """A task id reused for a new message: only a redelivered message is checked."""
    store_result(app, "t1", 3, states.SUCCESS)
    job, runner = prepare(app, task_message("t.add", "t1", (1, 2), {}), redelivered=False)
    assert job is not None and runner.done_before.count == 0


@pytest.mark.parametrize("state", [states.STARTED, states.RETRY, None])
def test_an_outcome_not_final_runs_again(app: Celery, state: str | None) -> None:
    if state is not None:
        store_result(app, "t1", {"pid": 1} if state == states.STARTED else
                     ValueError("again"), state)
    job, runner = prepare(app, task_message("t.add", "t1", (1, 2), {}), redelivered=True)
    assert job is not None and runner.done_before.count == 0


def test_a_lost_worker_is_not_a_completed_run(app: Celery) -> None:
    store_result(app, "t1", WorkerLostError("gone"), states.FAILURE)
    job, runner = prepare(app, task_message("t.add", "t1", (1, 2), {}), redelivered=True)
    assert job is not None and runner.done_before.count == 0


def test_follow_ups_after_the_store_run_it_again(app: Celery) -> None:
    """A callback, chain step or chord count is sent after the store: a run that died in
    between may not have sent it."""
    store_result(app, "t1", 3, states.SUCCESS)
    message = task_message("t.add", "t1", (1, 2), {},
                           callbacks=[dict(app.signature("t.add", (1,)))])
    job, _ = prepare(app, message, redelivered=True)
    assert job is not None


def test_result_hooks_run_it_again(app: Celery) -> None:
    store_result(app, "t1", None, states.SUCCESS)
    job, _ = prepare(app, task_message("t.hooked", "t1", (), {}), redelivered=True)
    assert job is not None


def test_ignore_result_runs_it_again(app: Celery) -> None:
    store_result(app, "t1", None, states.SUCCESS)
    job, _ = prepare(app, task_message("t.quiet", "t1", (), {}), redelivered=True)
    assert job is not None


def test_a_batch_of_redelivered_messages_reads_their_outcomes_at_once(
        app: Celery, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first redelivered message reads the outcomes of those held after it in one
    ``get_many``; the others find theirs read; a first delivery reads nothing."""
    store_result(app, "t1", 3, states.SUCCESS)
    store_result(app, "t3", ValueError("boom"), states.FAILURE)
    for task_id in ("t1", "t2", "t3"):
        app.broker.publish(task_message("t.add", task_id, (1, 2), {}), "celery")
    app.broker.receive(["celery"], owner="gone", limit=3, timeout=1)
    assert app.broker.expire_owner("gone") == 3
    app.broker.publish(task_message("t.add", "t4", (1, 2), {}), "celery")
    batch = app.broker.receive(["celery"], owner="w", limit=4, timeout=1)
    assert [d.redelivered for d in batch].count(True) == 3
    reads: list[list[str]] = []
    real_get_many = app.backend.get_many
    monkeypatch.setattr(app.backend, "get_many",
                        lambda ids: reads.append(list(ids)) or real_get_many(ids))
    monkeypatch.setattr(app.backend, "get", lambda task_id: pytest.fail("one get"))
    keeper = LeaseKeeper(app.broker, interval=60)
    keeper.hold(batch)
    runner = JobRunner(app, keeper, "w@test")
    jobs = [runner.prepare(d, set()) for d in batch]
    ran = sorted(job.request.id for job in jobs if job is not None)
    assert ran == ["t2", "t4"] and runner.done_before.count == 2
    assert len(reads) == 1 and sorted(reads[0]) == ["t1", "t2", "t3"]


def test_a_store_without_get_many_reads_one_by_one(app: Celery,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    store_result(app, "t1", 3, states.SUCCESS)
    store_result(app, "t2", 3, states.SUCCESS)
    for task_id in ("t1", "t2"):
        app.broker.publish(task_message("t.add", task_id, (1, 2), {}), "celery")
    app.broker.receive(["celery"], owner="gone", limit=2, timeout=1)
    app.broker.expire_owner("gone")
    batch = app.broker.receive(["celery"], owner="w", limit=2, timeout=1)
    monkeypatch.setattr(app.backend, "get_many", None)  # a store without it
    reads: list[str] = []
    real_get = app.backend.get
    monkeypatch.setattr(app.backend, "get", lambda i: reads.append(i) or real_get(i))
    keeper = LeaseKeeper(app.broker, interval=60)
    keeper.hold(batch)
    runner = JobRunner(app, keeper, "w@test")
    assert [runner.prepare(d, set()) for d in batch] == [None, None]
    assert runner.done_before.count == 2
    assert reads == ["t1", "t2"]
