"""The token-bucket part of the broker contract (``Broker.take_token``), on every broker.

``take_token(key, rate, capacity)`` is what task ``rate_limit`` runs on: one bucket
per key shared by every client of the broker, atomic, starting full, refilled at
``rate`` per second up to ``capacity``; a refused call returns the wait and takes
nothing.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from celeriac.brokers.base import Broker
from celeriac.brokers.buckets import bucket_take
from celeriac.exceptions import OperationalError

from .conftest import make_broker


def key() -> str:
    return f"task:tests.limited.{uuid.uuid4().hex[:8]}"


def test_a_new_bucket_is_full_then_says_how_long_to_wait(broker: Broker) -> None:
    k = key()
    assert [broker.take_token(k, 2.0, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = broker.take_token(k, 2.0, 3)
    assert 0.0 < wait <= 0.5


def test_a_refused_call_takes_nothing(broker: Broker) -> None:
    k = key()
    assert broker.take_token(k, 1.0, 1) == 0.0
    first = broker.take_token(k, 1.0, 1)
    second = broker.take_token(k, 1.0, 1)
    assert 0.0 < second <= first <= 1.0  # had the refusal taken a token, it would grow


def test_the_bucket_refills_at_its_rate(broker: Broker) -> None:
    k = key()
    assert broker.take_token(k, 10.0, 1) == 0.0
    wait = broker.take_token(k, 10.0, 1)
    assert 0.0 < wait <= 0.1
    time.sleep(wait + 0.02)
    assert broker.take_token(k, 10.0, 1) == 0.0


def test_keys_are_separate_buckets(broker: Broker) -> None:
    a, b = key(), key()
    assert broker.take_token(a, 0.01, 1) == 0.0
    assert broker.take_token(a, 0.01, 1) > 0.0
    assert broker.take_token(b, 0.01, 1) == 0.0


def test_concurrent_callers_never_take_more_than_the_bucket_holds(broker: Broker) -> None:
    k, capacity, callers = key(), 5, 12
    results: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(callers)

    busy: list[OperationalError] = []

    def take() -> None:
        start.wait()
        try:
            got = broker.take_token(k, 0.001, capacity)  # practically no refill meanwhile
        except OperationalError as exc:  # gave up waiting for the server (a loaded machine)
            with lock:
                busy.append(exc)
            return
        with lock:
            results.append(got)

    threads = [threading.Thread(target=take) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) + len(busy) == callers, "a caller neither took nor gave up"
    assert len(results) >= capacity, busy  # the bucket was not starved by the server
    assert results.count(0.0) == capacity, (results, busy)  # never more than it holds


def test_every_client_of_the_broker_shares_the_bucket(broker: Broker,
                                                      request: pytest.FixtureRequest) -> None:
    kind = request.node.callspec.params["broker"]
    if kind == "memory":
        pytest.skip("memory:// is one process's broker: its clients share the instance")
    if not broker.capabilities.shared_buckets:  # amqp://: documented in docs/rabbitmq.md
        other = make_broker(kind, request)
        try:
            k = key()
            assert broker.take_token(k, 0.01, 1) == 0.0
            assert other.take_token(k, 0.01, 1) == 0.0  # a bucket of its own
        finally:
            other.close()
        return
    other = make_broker(kind, request)
    try:
        k = key()
        assert broker.take_token(k, 0.01, 2) == 0.0
        assert other.take_token(k, 0.01, 2) == 0.0
        assert broker.take_token(k, 0.01, 2) > 0.0
        assert other.take_token(k, 0.01, 2) > 0.0
    finally:
        other.close()


def test_a_changed_rate_applies_from_the_next_call(broker: Broker) -> None:
    k = key()
    assert broker.take_token(k, 0.01, 1) == 0.0
    assert broker.take_token(k, 0.01, 1) > 50.0
    assert broker.take_token(k, 1000.0, 1) <= 0.001 or broker.take_token(k, 1000.0, 1) == 0.0


def test_bad_arguments_are_refused(broker: Broker) -> None:
    with pytest.raises(ValueError):
        broker.take_token(key(), 0.0, 1)
    with pytest.raises(ValueError):
        broker.take_token(key(), 1.0, 0.5)


def test_bucket_arithmetic() -> None:
    assert bucket_take(1.0, 0.0, 0.0, 1.0, 1.0) == (0.0, 0.0)
    assert bucket_take(0.0, 0.0, 0.25, 1.0, 1.0) == (0.25, 0.75)
    assert bucket_take(0.0, 0.0, 100.0, 1.0, 3.0) == (2.0, 0.0)  # capped at capacity
    assert bucket_take(0.5, 10.0, 9.0, 1.0, 1.0) == (0.5, 0.5)  # a clock going back adds nothing
