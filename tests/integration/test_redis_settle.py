"""``settle_and_receive`` on Redis: a batch's results, then its acknowledgements, then the
next lease, in one round trip, with the at-least-once order kept inside one script.

A result write that fails (here: a key holding a list, so ``GET`` fails) ends the
``SETTLE`` script before any acknowledgement: the message stays leased, and what
the same round trip leased goes back to its queue.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from celeriac.brokers.memory.results import MemoryResultStore
from celeriac.brokers.redis.broker import RedisBroker
from celeriac.brokers.redis.results import RedisResultStore
from settling import (
    meta,
    nothing_settled,
    one_leased_one_waiting,
    settle_two_and_lease_two,
    settles_after_the_failure,
    store_elsewhere_takes_the_interface_steps,
)

pytestmark = pytest.mark.redis


@pytest.fixture
def pair(redis_url: str, key_prefix: str) -> Iterator[tuple[RedisBroker, RedisResultStore]]:
    broker = RedisBroker(redis_url, lease_seconds=30, options={"global_keyprefix": key_prefix})
    store = RedisResultStore(redis_url, options={"global_keyprefix": key_prefix})
    yield broker, store
    store.close()
    broker.close()


def test_results_acks_and_the_next_lease_in_one_call(
        pair: tuple[RedisBroker, RedisResultStore]) -> None:
    settle_two_and_lease_two(*pair)


def test_a_failed_result_write_acknowledges_nothing(
        pair: tuple[RedisBroker, RedisResultStore], redis_url: str) -> None:
    broker, store = pair
    delivery = one_leased_one_waiting(broker)
    raw = redis.Redis.from_url(redis_url)
    raw.rpush(store.task_key("task-0"), "not a meta")  # GET on it fails: WRONGTYPE
    with pytest.raises(redis.ResponseError):
        broker.settle_and_receive(store, [("task-0", meta("task-0"))], 60, [delivery], ["q"],
                                  owner="w")
    nothing_settled(broker)  # task-1, leased in the same trip, was given back
    raw.delete(store.task_key("task-0"))
    raw.close()
    settles_after_the_failure(broker, store, delivery)


def test_a_store_elsewhere_takes_the_interface_steps(
        pair: tuple[RedisBroker, RedisResultStore]) -> None:
    store_elsewhere_takes_the_interface_steps(pair[0], MemoryResultStore("memory://"))
