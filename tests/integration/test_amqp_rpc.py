"""The ``rpc://`` result store on RabbitMQ with a celeriac client and worker: results reach
the caller's reply queue, in any order; what needs stored results is refused clearly.

Interop with real Celery (both directions) is in ``test_amqp_interop_celery.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("amqp")

from celeriac import Celery, chord, group
from celeriac.exceptions import ImproperlyConfigured
from inprocess import threaded_worker


@pytest.fixture
def app(rabbitmq_url: str) -> Iterator[Celery]:
    app = Celery("rpcapp", broker=rabbitmq_url, backend="rpc://", set_as_current=False)

    @app.task(name="rpc.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="rpc.nap")
    def nap(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    with threaded_worker(app, "rpc1@test", ready=None):
        yield app
    app.close()


def test_results_come_back_to_the_caller_in_any_order(app: Celery) -> None:
    slow = app.tasks["rpc.nap"].delay(1.0)
    quick = [app.tasks["rpc.add"].delay(i, 1) for i in range(5)]
    assert slow.get(timeout=30) == 1.0  # the quick results arrive first and are kept
    assert [r.get(timeout=30) for r in quick] == [1, 2, 3, 4, 5]
    assert quick[0].state == "SUCCESS"


def test_state_is_read_without_waiting_and_groups_collect(app: Celery) -> None:
    napping = app.tasks["rpc.nap"].delay(0.5)
    assert napping.state == "PENDING"
    deadline = time.monotonic() + 30
    while napping.state != "SUCCESS":  # state reads what arrived, never blocks long
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert napping.result == 0.5
    add = app.tasks["rpc.add"]
    assert group(add.s(i, i) for i in range(4)).delay().get(timeout=30) == [0, 2, 4, 6]


def test_another_thread_of_the_caller_has_its_own_reply_queue(app: Celery) -> None:
    got: list[int] = []

    def call() -> None:
        got.append(app.tasks["rpc.add"].delay(20, 22).get(timeout=30))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    assert got == [42, 42, 42]


def test_chords_are_refused_before_anything_is_sent(app: Celery) -> None:
    add = app.tasks["rpc.add"]
    with pytest.raises(ImproperlyConfigured, match="a chord needs stored results"):
        chord([add.s(1, 1), add.s(2, 2)])(add.s(0))


def test_rpc_needs_a_rabbitmq_broker() -> None:
    other = Celery("rpcbad", broker="memory://", backend="rpc://", set_as_current=False)
    with pytest.raises(ImproperlyConfigured, match="rpc:// sends results through the RabbitMQ"):
        _ = other.backend
