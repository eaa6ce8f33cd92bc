"""Redis result store specifics beyond the contract suite: Celery's exact write
(SETEX + PUBLISH on the key), expiry, the shared pub/sub listener, batched writes,
and the chord join keys."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest
import redis

from celeriac.brokers.redis.results import RedisResultStore, waits_for
from celeriac.results.store import encode_meta

pytestmark = pytest.mark.redis


@pytest.fixture
def store(redis_url: str, key_prefix: str) -> RedisResultStore:
    return RedisResultStore(redis_url, options={"global_keyprefix": key_prefix})


def meta(task_id: str, status: str = "SUCCESS", result: Any = 4) -> dict[str, Any]:
    return {"status": status, "result": result, "traceback": None, "children": [],
            "date_done": "2026-11-21T13:36:40.118348+00:00", "task_id": task_id}


def test_set_is_setex_plus_publish_on_the_key(store: RedisResultStore, raw: redis.Redis,
                                              key_prefix: str) -> None:
    tid = str(uuid.uuid4())
    key = f"{key_prefix}celery-task-meta-{tid}"
    pubsub = raw.pubsub()
    pubsub.subscribe(key)
    assert pubsub.get_message(timeout=1)["type"] == "subscribe"
    store.set(tid, meta(tid))
    published = pubsub.get_message(timeout=2)
    assert published is not None and published["data"] == raw.get(key)
    assert published["data"].decode() == encode_meta(meta(tid))
    assert 86390 < raw.ttl(key) <= 86400
    pubsub.close()


def test_expiry_none_and_custom(redis_url: str, key_prefix: str, raw: redis.Redis) -> None:
    forever = RedisResultStore(redis_url, expires=None, options={"global_keyprefix": key_prefix})
    tid = str(uuid.uuid4())
    forever.set(tid, meta(tid))
    assert raw.ttl(f"{key_prefix}celery-task-meta-{tid}") == -1
    forever.set(tid, meta(tid), expires=60)
    assert 55 < raw.ttl(f"{key_prefix}celery-task-meta-{tid}") <= 60


def test_set_many_is_one_transaction_with_publishes(store: RedisResultStore, raw: redis.Redis,
                                                    key_prefix: str) -> None:
    ids = [str(uuid.uuid4()) for _ in range(1500)]
    pubsub = raw.pubsub()
    pubsub.subscribe(f"{key_prefix}celery-task-meta-{ids[-1]}")
    pubsub.get_message(timeout=1)
    store.set_many((tid, meta(tid, result=i)) for i, tid in enumerate(ids))
    got = store.get_many(ids)
    assert [got[tid]["result"] for tid in ids] == list(range(1500))
    message = pubsub.get_message(timeout=2)
    assert message is not None and json.loads(message["data"])["result"] == 1499
    pubsub.close()


def test_many_waiters_share_one_subscription_connection(store: RedisResultStore,
                                                        redis_url: str, raw: redis.Redis,
                                                        key_prefix: str) -> None:
    ids = [str(uuid.uuid4()) for _ in range(20)]
    results: dict[str, Any] = {}

    def wait(tid: str) -> None:
        results[tid] = store.wait(tid, timeout=10)

    threads = [threading.Thread(target=wait, args=(tid,)) for tid in ids]
    for t in threads:
        t.start()
    time.sleep(0.3)
    waits = waits_for(redis_url, {"global_keyprefix": key_prefix})
    assert waits is not None and waits is store._waits()  # the RESP3 connection
    assert sum(1 for c in raw.client_list()
               if int(c.get("sub", 0)) >= 20) >= 1  # one connection holds all 20 channels
    started = time.monotonic()
    store.set_many((tid, meta(tid, result=tid)) for tid in ids)
    for t in threads:
        t.join(10)
    assert time.monotonic() - started < 3
    assert all(results[tid] is not None and results[tid]["result"] == tid for tid in ids)


def test_wait_ignores_non_ready_states_until_ready(store: RedisResultStore) -> None:
    tid = str(uuid.uuid4())

    def progress() -> None:
        time.sleep(0.2)
        store.set(tid, meta(tid, status="STARTED", result={"pid": 1}))
        time.sleep(0.2)
        store.set(tid, meta(tid, status="FAILURE", result={"exc_type": "ValueError"}))

    thread = threading.Thread(target=progress)
    thread.start()
    waited = store.wait(tid, timeout=5)
    thread.join()
    assert waited is not None and waited["status"] == "FAILURE"
    tid2 = str(uuid.uuid4())
    store.set(tid2, meta(tid2, status="STARTED"))
    last = store.wait(tid2, timeout=0.3)
    assert last is not None and last["status"] == "STARTED"


def test_chord_keys_expire_and_duplicates_are_ignored(store: RedisResultStore,
                                                      raw: redis.Redis,
                                                      key_prefix: str) -> None:
    gid = str(uuid.uuid4())
    base = f"{key_prefix}celery-taskset-meta-{gid}"
    assert store.chord_add(gid, 0, meta("a", result=1), 2) is None
    assert store.chord_add(gid, 0, meta("a", result=999), 2) is None  # redelivered member
    assert 86390 < raw.ttl(f"{base}.j") <= 86400
    done = store.chord_add(gid, 1, meta("b", result=2), 2)
    assert done is not None and [m["result"] for m in done] == [1, 2]
    assert store.chord_add(gid, 1, meta("b", result=2), 2) is None  # fired exactly once
    gid2 = str(uuid.uuid4())
    raw.set(f"{key_prefix}celery-taskset-meta-{gid2}.t", 1)
    assert store.chord_add(gid2, 0, meta("x"), 1) is None  # Celery's .t adjustment counts
    assert store.chord_add(gid2, 1, meta("y"), 1) is not None


def test_a_member_ending_before_celerys_size_key_is_counted(store: RedisResultStore,
                                                            raw: redis.Redis,
                                                            key_prefix: str) -> None:
    """A Celery client writes ``.s`` just before its last header task: members that end
    earlier are recorded, and the join completes once, with the last one."""
    gid = str(uuid.uuid4())
    size_key = f"{key_prefix}celery-taskset-meta-{gid}.s"
    assert store.chord_add_celery_sized(gid, 0, meta("a", result=1)) is None
    assert store.chord_add_celery_sized(gid, 1, meta("b", result=2)) is None
    assert raw.get(size_key) is None  # the store never guesses the size
    raw.set(size_key, 3)
    done = store.chord_add_celery_sized(gid, 2, meta("c", result=3))
    assert done is not None and [m["result"] for m in done] == [1, 2, 3]
    assert store.chord_add_celery_sized(gid, 2, meta("c", result=3)) is None
    store.chord_clear(gid)
