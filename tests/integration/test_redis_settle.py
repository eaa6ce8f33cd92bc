"""``settle_and_receive`` on Redis: a batch's results, then its acknowledgements, then the
next lease, in one round trip, with the at-least-once order kept inside one script.

A result write that fails (here: a key holding a list, so ``GET`` fails) ends the
``SETTLE`` script before any acknowledgement: the message stays leased, and what
the same round trip leased goes back to its queue.
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
        pair: tuple[RedisBroker, RedisResultStore], redis_url: str) -> None:
    broker, store = pair
    broker.publish(task_message("t.x", "task-0", (0,)), "q")
    [delivery] = broker.receive(["q"], owner="w", timeout=1)
    raw = redis.Redis.from_url(redis_url)
    raw.rpush(store.task_key("task-0"), "not a meta")  # GET on it fails: WRONGTYPE
    broker.publish(task_message("t.x", "task-1", (1,)), "q")
    with pytest.raises(redis.ResponseError):
        broker.settle_and_receive(store, [("task-0", meta("task-0"))], 60, [delivery], ["q"],
                                  owner="w")
    stats = broker.stats("q")
    assert stats.leased == 1  # task-0 still held: it will run again, not be lost
    assert stats.ready == 1  # task-1, leased in the same trip, was given back
    raw.delete(store.task_key("task-0"))
    raw.close()
    written, done, got = broker.settle_and_receive(store, [("task-0", meta("task-0"))], 60,
                                                   [delivery], ["q"], owner="w")
    assert (written, done, [d.message.task_id for d in got]) == ([True], 1, ["task-1"])


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
