"""``settle_and_receive`` on Redis: a batch's results, then its acknowledgements, then the
next lease, in one round trip, with the at-least-once order kept inside one script.

A result write that fails (here: an expiry Redis refuses) ends the ``SETTLE`` script
before any acknowledgement: the message stays leased, and what the same round trip
leased goes back to its queue.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from celeriac.brokers.memory.results import MemoryResultStore
from celeriac.brokers.redis.broker import RedisBroker
from celeriac.brokers.redis.results import RedisResultStore
from celeriac.messages import task_message
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
        pair: tuple[RedisBroker, RedisResultStore], monkeypatch: pytest.MonkeyPatch) -> None:
    broker, store = pair
    delivery = one_leased_one_waiting(broker)
    monkeypatch.setattr(store, "ttl_argument", lambda expires: "ex:-1")  # SETEX fails
    with pytest.raises(redis.ResponseError):
        broker.settle_and_receive(store, [("task-0", meta("task-0"))], 60, [delivery], ["q"],
                                  owner="w")
    nothing_settled(broker)  # task-1, leased in the same trip, was given back
    assert store.get("task-0") is None
    monkeypatch.undo()
    settles_after_the_failure(broker, store, delivery)
    assert broker.stats("q").leased == 1  # task-1 only: task-0's lease is gone everywhere


def test_a_meta_key_of_another_type_is_overwritten(
        pair: tuple[RedisBroker, RedisResultStore], redis_url: str) -> None:
    """A task meta key holding a list (not a meta): the result is written over it, as
    Celery's ``SET`` would, instead of failing the batch on every retry."""
    broker, store = pair
    delivery = one_leased_one_waiting(broker)
    raw = redis.Redis.from_url(redis_url)
    raw.rpush(store.task_key("task-0"), "not a meta")
    raw.close()
    assert broker.settle_and_receive(store, [("task-0", meta("task-0"))], 60, [delivery],
                                     ["q"], owner="w")[:2] == ([True], 1)
    assert store.get("task-0") == meta("task-0")


def test_one_batch_keeps_the_revoked_rule_for_a_key_written_twice(
        pair: tuple[RedisBroker, RedisResultStore]) -> None:
    """The guards read the stored metas once per batch: a REVOKED meta written earlier in
    the same batch still refuses a later SUCCESS of the same task."""
    broker, store = pair
    broker.publish(task_message("t.x", "task-0", (0,)), "q")
    [delivery] = broker.receive(["q"], owner="w", timeout=1)
    written, done, _ = broker.settle_and_receive(
        store, [("task-0", meta("task-0", "REVOKED")), ("task-0", meta("task-0"))], 60,
        [delivery], ["q"], owner="w")
    assert (written, done) == ([True, False], 1)
    assert store.get("task-0")["status"] == "REVOKED"  # type: ignore[index]


def test_acknowledgements_of_several_queues_and_owners_in_one_batch(
        pair: tuple[RedisBroker, RedisResultStore], redis_url: str, key_prefix: str) -> None:
    """Each lease set and owner set is named once; every held lease is removed from its
    own, a lease lost meanwhile is not counted."""
    broker, store = pair
    for queue in ("a", "b"):
        for n in range(2):
            broker.publish(task_message("t.x", f"{queue}-{n}", (n,)), queue)
    got = broker.receive(["a"], owner="w1", limit=2, timeout=1)
    got += broker.receive(["b"], owner="w2", limit=2, timeout=1)
    assert len(got) == 4
    broker.ack([got[0]])  # acknowledged before: fenced in the batch below
    written, done, _ = broker.settle_and_receive(
        store, [(d.message.task_id or "", meta(d.message.task_id or "")) for d in got], 60,
        got, [], owner="w1")
    assert written == [True] * 4 and done == 3
    raw = redis.Redis.from_url(redis_url)
    for name in ("leases.a", "leases.b", "owner.w1", "owner.w2"):
        assert not raw.exists(f"{key_prefix}_celeriac.{name}")
    assert not raw.keys(f"{key_prefix}_celeriac.lease.*")
    raw.close()


def test_a_store_elsewhere_takes_the_interface_steps(
        pair: tuple[RedisBroker, RedisResultStore]) -> None:
    store_elsewhere_takes_the_interface_steps(pair[0], MemoryResultStore("memory://"))
