"""``settle_and_receive`` on Redis: a batch's results, then its acknowledgements, then the
next lease, in one round trip, with the at-least-once order kept inside one script.

A result write that fails (here: an expiry Redis refuses) ends the ``SETTLE`` script
before any acknowledgement: the message stays leased, and what the same round trip
leased goes back to its queue.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from celeriac.brokers.memory.results import MemoryResultStore
from celeriac.brokers.redis.broker import RedisBroker
from celeriac.brokers.redis.results import RedisResultStore
from celeriac.messages import task_message

pytestmark = pytest.mark.redis


def meta(task_id: str, status: str = "SUCCESS") -> dict[str, Any]:
    return {"status": status, "result": 1, "traceback": None, "children": [],
            "date_done": "2026-11-21T13:36:40+00:00", "task_id": task_id}


@pytest.fixture
def pair(redis_url: str, key_prefix: str) -> tuple[RedisBroker, RedisResultStore]:
    broker = RedisBroker(redis_url, lease_seconds=30, options={"global_keyprefix": key_prefix})
    store = RedisResultStore(redis_url, options={"global_keyprefix": key_prefix})
    return broker, store


def test_results_acks_and_the_next_lease_in_one_call(
        pair: tuple[RedisBroker, RedisResultStore]) -> None:
    broker, store = pair
    assert broker.carries(store)
    for n in range(4):
        broker.publish(task_message("t.x", f"task-{n}", (n,)), "q")
    first = broker.receive(["q"], owner="w", limit=2, timeout=1)
    store.set("task-1", meta("task-1", "REVOKED"))
    written, done, more = broker.settle_and_receive(
        store, [(d.message.task_id or "", meta(d.message.task_id or "")) for d in first],
        60, first, ["q"], owner="w", limit=5)
    assert written == [True, False]  # REVOKED stays
    assert done == 2 and [d.message.task_id for d in more] == ["task-2", "task-3"]
    assert store.get("task-0")["status"] == "SUCCESS"  # type: ignore[index]
    assert store.get("task-1")["status"] == "REVOKED"  # type: ignore[index]
    assert broker.stats("q").leased == 2
    again = broker.settle_and_receive(store, [("task-2", meta("task-2"))], 60, first, ["q"],
                                      owner="w", limit=5)
    assert again == ([True], 0, [])  # the first two were acknowledged already: fenced


def test_a_failed_result_write_acknowledges_nothing(
        pair: tuple[RedisBroker, RedisResultStore], monkeypatch: pytest.MonkeyPatch) -> None:
    broker, store = pair
    broker.publish(task_message("t.x", "task-0", (0,)), "q")
    [delivery] = broker.receive(["q"], owner="w", timeout=1)
    monkeypatch.setattr(store, "ttl_argument", lambda expires: "ex:-1")  # SETEX fails
    broker.publish(task_message("t.x", "task-1", (1,)), "q")
    with pytest.raises(redis.ResponseError):
        broker.settle_and_receive(store, [("task-0", meta("task-0"))], 60, [delivery], ["q"],
                                  owner="w")
    stats = broker.stats("q")
    assert stats.leased == 1  # task-0 still held: it will run again, not be lost
    assert stats.ready == 1  # task-1, leased in the same trip, was given back
    assert store.get("task-0") is None
    monkeypatch.undo()
    written, done, got = broker.settle_and_receive(store, [("task-0", meta("task-0"))], 60,
                                                   [delivery], ["q"], owner="w")
    assert (written, done, [d.message.task_id for d in got]) == ([True], 1, ["task-1"])
    assert broker.stats("q").leased == 1  # task-1 only: task-0's lease is gone everywhere


def test_a_meta_key_of_another_type_is_overwritten(
        pair: tuple[RedisBroker, RedisResultStore], redis_url: str) -> None:
    """A task meta key holding a list (not a meta): the result is written over it, as
    Celery's ``SET`` would, instead of failing the batch on every retry."""
    broker, store = pair
    broker.publish(task_message("t.x", "task-0", (0,)), "q")
    [delivery] = broker.receive(["q"], owner="w", timeout=1)
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
    broker, _ = pair
    store = MemoryResultStore("memory://")
    assert not broker.carries(store)
    broker.publish(task_message("t.x", "task-0", (0,)), "q")
    [delivery] = broker.receive(["q"], owner="w", timeout=1)
    assert broker.settle_and_receive(store, [("task-0", meta("task-0"))], None, [delivery],
                                     ["q"], owner="w") == ([True], 1, [])
    assert store.get("task-0") == meta("task-0")
