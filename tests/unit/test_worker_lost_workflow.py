"""A task that ends outside its tracer (its workers kept dying) still finishes its workflow:
FAILURE is stored, its error callbacks run and its chord is told, so the body fails with
ChordError instead of waiting forever."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from celeriac import Celery, Task, chord
from celeriac.exceptions import ChordError, TimeLimitExceeded, WorkerLostError
from celeriac.worker.consumer import Consumer
from celeriac.worker.pools import ThreadPool


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("lostwf", broker="memory://", backend="memory://")
    app.conf.worker_lease_seconds = 0.3
    app.conf.worker_max_redeliveries = 1
    yield app
    app.close()


def _lose_first_delivery(app: Celery) -> None:
    """Lease every ready message to an owner that 'dies' (never acks); leases lapse."""
    taken = app.broker.receive(["celery"], owner="dead-worker", limit=100, timeout=1)
    assert taken, "expected messages to lease"
    time.sleep(0.5)


def _run_worker_until(app: Celery, done: Callable[[], bool], timeout: float = 60.0) -> None:
    """Run a worker until ``done()`` holds (a loaded machine may take a while: the
    deadline only stops a test that would otherwise hang)."""
    consumer = Consumer(app, ["celery"], ThreadPool(2))
    thread = threading.Thread(target=consumer.run)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        consumer.stop()
        thread.join(10)


def test_lost_chord_member_fails_the_body_and_calls_errbacks(app: Celery) -> None:
    seen: list[str] = []

    @app.task
    def member(x: int) -> int:
        return x

    @app.task
    def body(results: list[int]) -> int:
        return sum(results)

    @app.task
    def on_error(task_id: str) -> None:
        seen.append(task_id)

    header = [member.s(1), member.s(2).on_error(on_error.s())]
    result = chord(header)(body.s())
    _lose_first_delivery(app)
    _run_worker_until(app, lambda: len(app.broker.dead_letters("celery")) == 2
                      and len(seen) == 1 and app.AsyncResult(result.id).ready())

    dead = app.broker.dead_letters("celery")
    assert len(dead) == 2 and all(d.reason.startswith("worker_lost") for d in dead)
    lost_ids = {d.message.task_id for d in dead}
    for task_id in lost_ids:
        assert isinstance(app.AsyncResult(task_id).result, WorkerLostError)
    assert len(seen) == 1 and seen[0] in lost_ids
    with pytest.raises(WorkerLostError):  # get() follows parents: the header failed first
        result.get(timeout=5, disable_sync_subtasks=False)
    with pytest.raises(ChordError, match="Dependency"):
        app.AsyncResult(result.id).get(timeout=5, disable_sync_subtasks=False)


@pytest.mark.parametrize("lost_option", [{"reject_on_worker_lost": False},
                                         {"retry_on_worker_lost": True}])
def test_a_timed_out_requeue_is_not_taken_for_a_lost_worker(
        app: Celery, lost_option: dict[str, bool]) -> None:
    """``acks_on_timeout=False`` requeues a timed-out run with a lost count: it must run
    again under the time-limit rule (dead-lettered as ``time_limit`` at the redelivery
    limit), not be dead-lettered or retried as a worker loss."""
    app.conf.worker_max_redeliveries = 3
    runs: list[int] = []

    @app.task(bind=True, time_limit=0.3, acks_on_timeout=False, max_retries=5,
              default_retry_delay=0, **lost_option)
    def slow(self: Task) -> None:
        runs.append(self.request.retries)
        for _ in range(200):
            time.sleep(0.01)

    result = slow.delay()
    _run_worker_until(app, lambda: bool(app.broker.dead_letters()))
    [letter] = app.broker.dead_letters()
    assert letter.reason == "time_limit: exceeded its time limit in 3 runs (acks_on_timeout=False)"
    assert runs == [0, 0, 0], "each run is a requeue of the same message, not a retry"
    assert result.state == "FAILURE" and isinstance(result.result, TimeLimitExceeded)
