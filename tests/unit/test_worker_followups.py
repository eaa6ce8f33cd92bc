"""After the body ran, nothing runs it again (issue 21, point 2).

A follow-up step that cannot be sent (the next chain step, a link) is
dead-lettered on its own while the task's message is acknowledged; an internal
error gives the message back as a *failed* delivery, which counts, so a message
that keeps failing that way reaches the dead-letter store instead of looping.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from celeriac import Celery
from celeriac.brokers.base import FOLLOWUP_FAILED, WORKER_LOST
from celeriac.worker.job import JobRunner
from celeriac.worker.leases import LeaseKeeper


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("followups", broker="memory://", backend="memory://", set_as_current=False)
    app.conf.worker_max_redeliveries = 3
    runs: list[str] = []
    app.runs = runs  # type: ignore[attr-defined]

    @app.task(name="t.first")
    def first(x: int) -> int:
        runs.append("first")
        return x + 1

    @app.task(name="t.second")
    def second(x: int) -> int:
        runs.append("second")
        return x * 10

    yield app


def run_ready(app: Celery) -> list[Any]:
    """Run every ready message through one JobRunner, as a worker would."""
    keeper = LeaseKeeper(app.broker, interval=60)
    runner = JobRunner(app, keeper, "w@test")
    outcomes = []
    while True:
        batch = app.broker.receive(["celery"], owner="w", limit=10, timeout=0)
        if not batch:
            return outcomes
        keeper.hold(batch)
        for delivery in batch:
            job = runner.prepare(delivery, set())
            if job is not None:
                runner.run(job)
                outcomes.append(job.id)


@contextmanager
def refusing_second(app: Celery) -> Iterator[None]:
    """The broker refuses publishes of ``t.second`` (an error publishing does not retry)."""
    original = app.broker.publish

    def publish(message: Any, queue: str, **kwargs: Any) -> None:
        if message.task_name == "t.second":
            raise ValueError("the broker refused t.second")
        original(message, queue, **kwargs)

    app.broker.publish = publish  # type: ignore[method-assign]
    try:
        yield
    finally:
        app.broker.publish = original  # type: ignore[method-assign]


def test_a_chain_step_that_cannot_be_sent_is_dead_lettered_alone(app: Celery) -> None:
    result = (app.tasks["t.first"].s(1) | app.tasks["t.second"].s()).apply_async()
    with refusing_second(app):
        run_ready(app)
    assert app.runs == ["first"]  # type: ignore[attr-defined]
    assert app.backend.get(result.parent.id)["status"] == "SUCCESS"
    assert app.broker.stats("celery").ready == 0 and app.broker.stats("celery").leased == 0
    [letter] = app.broker.dead_letters()
    assert letter.reason.startswith(f"{FOLLOWUP_FAILED}: chain of t.first[{result.parent.id}]")
    assert "the broker refused t.second" in letter.reason
    assert letter.message.task_name == "t.second"
    assert letter.message.task_id == result.id  # the step's own message, its own id
    # sending it by hand continues the chain, without running the first task again
    assert app.broker.retry_dead_letter(letter.id)
    run_ready(app)
    assert app.runs == ["first", "second"]  # type: ignore[attr-defined]
    assert result.get(timeout=1) == 20


def test_a_link_that_cannot_be_sent_is_dead_lettered_alone(app: Celery) -> None:
    first = app.tasks["t.first"].apply_async((1,), link=app.tasks["t.second"].s())
    with refusing_second(app):
        run_ready(app)
    assert app.runs == ["first"]  # type: ignore[attr-defined]
    assert first.get(timeout=1) == 2
    [letter] = app.broker.dead_letters()
    assert letter.reason.startswith(f"{FOLLOWUP_FAILED}: link of t.first[{first.id}]")
    assert letter.message.task_name == "t.second"


def test_internal_errors_count_until_the_message_is_dead_lettered(app: Celery) -> None:
    """A store that fails after the body ran: the message is released as failed each time
    (counted), so after worker_max_redeliveries it is dead-lettered, not looping."""
    calls = []

    def broken_set(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise OSError("result store down")

    app.tasks["t.first"].delay(1)
    original = app.backend.set_many
    app.backend.set_many = broken_set  # type: ignore[method-assign]
    try:
        for _ in range(6):
            run_ready(app)
    finally:
        app.backend.set_many = original  # type: ignore[method-assign]
    assert app.runs == ["first"] * 3  # type: ignore[attr-defined]
    [letter] = app.broker.dead_letters()
    assert letter.reason.startswith(WORKER_LOST)
    assert (letter.delivery_count, letter.lost_count) == (4, 3)
