"""Wire compatibility of the Redis broker and result store with real Celery 5.7 / kombu 5.7.

Golden data is the capture in ``shared/reference/celery-wire-capture.txt``
(embedded below). Celery and kombu are imported here only, never by celeriac.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from celeriac.brokers.redis.broker import RedisBroker
from celeriac.brokers.redis.results import RedisResultStore
from celeriac.messages import task_message
from needs import need

pytestmark = pytest.mark.redis

SEP = b"\x06\x16"

#: ``add.delay(2, 2)`` as a real Celery 5.7 client stored it (capture, part A).
CAPTURED = (
    '{"body": "W1syLCAyXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjog'
    'bnVsbCwgImNob3JkIjogbnVsbH1d", "content-encoding": "utf-8", "content-type": '
    '"application/json", "headers": {"lang": "py", "task": "tasks.add", "id": '
    '"497c5b68-1ddf-4630-8a14-c788cdf9a6fa", "shadow": null, "eta": null, "expires": null, '
    '"group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": '
    '"497c5b68-1ddf-4630-8a14-c788cdf9a6fa", "parent_id": null, "argsrepr": "(2, 2)", '
    '"kwargsrepr": "{}", "origin": "gen17479@vm", "ignore_result": false, '
    '"replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}}, "properties": '
    '{"correlation_id": "497c5b68-1ddf-4630-8a14-c788cdf9a6fa", "reply_to": '
    '"eb3e27d1-e139-3c39-bce0-7bf693255326", "delivery_mode": 2, "delivery_info": '
    '{"exchange": "", "routing_key": "celery"}, "priority": 0, "body_encoding": "base64", '
    '"delivery_tag": "6b06be3b-6db3-4f32-a575-6defb7ceed9f"}}'
)


@pytest.fixture
def broker(redis_url: str, key_prefix: str) -> RedisBroker:
    return RedisBroker(redis_url, lease_seconds=5, options={"global_keyprefix": key_prefix})


@pytest.fixture
def store(redis_url: str, key_prefix: str) -> RedisResultStore:
    return RedisResultStore(redis_url, options={"global_keyprefix": key_prefix})


@pytest.fixture
def celery_app(redis_url: str, key_prefix: str) -> Iterator[Any]:
    celery = need("celery")
    app = celery.Celery("interop", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": key_prefix}
    app.conf.result_backend_transport_options = {"global_keyprefix": key_prefix}
    yield app
    app.close()


def queue_name() -> str:
    return f"wire-{uuid.uuid4().hex[:8]}"


def test_published_element_matches_celery_capture(broker: RedisBroker, raw: redis.Redis,
                                                  key_prefix: str) -> None:
    q = queue_name()
    tid = str(uuid.uuid4())
    broker.publish(task_message("tasks.add", tid, (2, 2), queue=q), q)
    [element] = raw.lrange(f"{key_prefix}{q}", 0, -1)
    ours, golden = json.loads(element), json.loads(CAPTURED)
    assert list(ours) == list(golden)  # same keys, same order
    assert list(ours["headers"]) == list(golden["headers"])
    assert list(ours["properties"]) == list(golden["properties"])
    assert ours["properties"]["delivery_info"] == {"exchange": "", "routing_key": q}
    assert ours["properties"]["body_encoding"] == "base64"
    assert (ours["content-type"], ours["content-encoding"]) == ("application/json", "utf-8")
    assert base64.b64decode(ours["body"]) == base64.b64decode(golden["body"])
    assert ours["headers"]["id"] == ours["properties"]["correlation_id"] == tid
    uuid.UUID(ours["properties"]["delivery_tag"])
    assert element.startswith(b'{"body": "')  # kombu's json.dumps spacing


def test_publish_writes_kombu_bindings(broker: RedisBroker, raw: redis.Redis,
                                       key_prefix: str) -> None:
    q = queue_name()
    broker.publish(task_message("tasks.add", "t1", (1, 1)), q)
    member = q.encode() + SEP + SEP + q.encode()
    assert raw.smembers(f"{key_prefix}_kombu.binding.{q}") == {member}
    assert raw.smembers(f"{key_prefix}_kombu.binding_permanent.{q}") == {member}
    assert q in broker.queues()


@pytest.mark.parametrize(("priority", "suffix"), [
    (0, b""), (2, b""), (3, SEP + b"3"), (5, SEP + b"3"), (6, SEP + b"6"), (8, SEP + b"6"),
    (9, SEP + b"9"),
])
def test_priority_goes_to_kombu_step_list(broker: RedisBroker, raw: redis.Redis,
                                          key_prefix: str, priority: int, suffix: bytes) -> None:
    q = queue_name()
    broker.publish(task_message("tasks.add", "t1", (1, 1)), q, priority=priority)
    key = f"{key_prefix}{q}".encode() + suffix
    [element] = raw.lrange(key, 0, -1)
    assert json.loads(element)["properties"]["priority"] == priority


def test_celery_client_messages_are_received(broker: RedisBroker, celery_app: Any,
                                             raw: redis.Redis, key_prefix: str) -> None:
    q = queue_name()
    first = celery_app.send_task("tasks.add", args=(2, 2), queue=q)
    urgent = celery_app.send_task("tasks.mul", args=(3, 4), queue=q, priority=0)
    later = celery_app.send_task("tasks.add", args=(5, 5), queue=q, priority=5)
    assert raw.llen(f"{key_prefix}{q}".encode() + SEP + b"3") == 1
    got = broker.receive([q], owner="w", limit=10, timeout=2)
    assert [d.message.task_id for d in got] == [first.id, urgent.id, later.id]
    assert got[0].message.task_name == "tasks.add"
    assert json.loads(got[0].message.body) == [
        [2, 2], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    assert got[0].tag == got[0].message.properties["delivery_tag"]
    assert broker.ack(got) == 3
    assert broker.stats(q).ready == broker.stats(q).leased == 0
    assert q in broker.queues()  # found through the bindings Celery declared


def test_celery_eta_message_is_parked_in_the_delayed_set(broker: RedisBroker, celery_app: Any,
                                                         raw: redis.Redis,
                                                         key_prefix: str) -> None:
    from celeriac.messages import to_timestamp
    q = queue_name()
    sent = celery_app.send_task("tasks.add", args=(1, 1), queue=q, countdown=0.6)
    [delivery] = broker.receive([q], owner="w", timeout=2)
    eta = to_timestamp(delivery.message.headers["eta"])
    assert eta is not None and eta > time.time()
    assert broker.release(delivery, not_before=eta)  # what the worker does with a future eta
    assert raw.zcard(f"{key_prefix}_celeriac.delayed.{q}") == 1
    assert broker.stats(q).delayed == 1
    assert broker.receive([q], owner="w", timeout=0.1) == []
    [again] = broker.receive([q], owner="w", timeout=3)
    assert again.message.task_id == sent.id
    assert time.time() >= eta - 0.05
    assert again.delivery_count == 2 and again.lost_count == 0


def test_kombu_consumer_reads_our_messages(broker: RedisBroker, redis_url: str,
                                           key_prefix: str) -> None:
    kombu = need("kombu")
    q = queue_name()
    tid = str(uuid.uuid4())
    broker.publish(task_message("tasks.add", tid, (7, 8), {"k": 1}, queue=q), q, priority=6)
    with kombu.Connection(redis_url, transport_options={"global_keyprefix": key_prefix}) as conn:
        simple = conn.SimpleQueue(q)
        message = simple.get(timeout=3)
        assert message.headers["id"] == tid
        assert message.headers["task"] == "tasks.add"
        assert message.properties["priority"] == 6
        assert message.content_type == "application/json"
        assert json.loads(message.body)[:2] == [[7, 8], {"k": 1}]
        message.ack()
        simple.close()


def celery_meta(task_id: str, result: Any) -> dict[str, Any]:
    return {"status": "SUCCESS", "result": result, "traceback": None, "children": [],
            "date_done": "2026-11-21T13:36:40.118348+00:00", "task_id": task_id}


def test_celery_async_result_reads_our_results(store: RedisResultStore,
                                               celery_app: Any) -> None:
    done = str(uuid.uuid4())
    store.set(done, celery_meta(done, 4))
    assert celery_app.AsyncResult(done).get(timeout=5) == 4
    pending = str(uuid.uuid4())
    timer = threading.Timer(0.3, store.set, (pending, celery_meta(pending, [1, "x"])))
    timer.start()
    started = time.monotonic()
    assert celery_app.AsyncResult(pending).get(timeout=5) == [1, "x"]  # woken by our PUBLISH
    assert time.monotonic() - started < 3
    timer.join()


def test_we_read_results_celery_wrote(store: RedisResultStore, celery_app: Any) -> None:
    done = str(uuid.uuid4())
    celery_app.backend.store_result(done, {"a": 1}, "SUCCESS")
    meta = store.get(done)
    assert meta is not None and meta["status"] == "SUCCESS" and meta["result"] == {"a": 1}
    pending = str(uuid.uuid4())
    timer = threading.Timer(0.3, celery_app.backend.store_result, (pending, 9, "SUCCESS"))
    timer.start()
    waited = store.wait(pending, timeout=5)
    assert waited is not None and waited["result"] == 9
    timer.join()
    assert store.get_many([done, pending]).keys() == {done, pending}


def test_celery_restores_group_we_saved(store: RedisResultStore, celery_app: Any) -> None:
    gid, t1, t2 = (str(uuid.uuid4()) for _ in range(3))
    store.save_group(gid, {"result": [[gid, None], [[[t1, None], None], [[t2, None], None]]]})
    restored = celery_app.GroupResult.restore(gid)
    assert restored is not None
    assert [r.id for r in restored.results] == [t1, t2]


def test_result_key_and_channel_follow_celery_prefix_rule(redis_url: str, raw: redis.Redis,
                                                          key_prefix: str) -> None:
    bare = key_prefix.rstrip(":")  # Celery appends "_" to a prefix without a separator
    store = RedisResultStore(redis_url, options={"global_keyprefix": bare})
    tid = str(uuid.uuid4())
    pubsub = raw.pubsub()
    pubsub.subscribe(f"{bare}_celery-task-meta-{tid}")
    pubsub.get_message(timeout=1)
    store.set(tid, celery_meta(tid, 1))
    message = pubsub.get_message(timeout=2)
    assert message is not None and json.loads(message["data"])["result"] == 1
    assert raw.exists(f"{bare}_celery-task-meta-{tid}")
    raw.delete(f"{bare}_celery-task-meta-{tid}")
    pubsub.close()


def test_chord_join_is_readable_celery_5_5_style(store: RedisResultStore, raw: redis.Redis,
                                                  key_prefix: str) -> None:
    gid = str(uuid.uuid4())
    for index in (1, 0):
        store.chord_add(gid, index, celery_meta(f"t{index}", index * 10), 2)
    base = f"{key_prefix}celery-taskset-meta-{gid}"
    members = [json.loads(m) for m in raw.zrange(f"{base}.j", 0, -1)]
    assert members == [[1, "t0", "SUCCESS", 0], [1, "t1", "SUCCESS", 10]]
    assert raw.get(f"{base}.s") == b"2"
    store.chord_clear(gid)
    assert not raw.exists(f"{base}.j", f"{base}.s", f"{base}.d", f"{base}.c", f"{base}.m")


def test_real_celery_worker_runs_our_messages(broker: RedisBroker, store: RedisResultStore,
                                              redis_url: str, key_prefix: str,
                                              tmp_path: Any) -> None:
    need("celery")
    q = queue_name()
    (tmp_path / "wiretasks.py").write_text(
        "from celery import Celery\n"
        f"app = Celery('wiretasks', broker={redis_url!r}, backend={redis_url!r})\n"
        f"app.conf.broker_transport_options = {{'global_keyprefix': {key_prefix!r}}}\n"
        f"app.conf.result_backend_transport_options = {{'global_keyprefix': {key_prefix!r}}}\n"
        "@app.task(name='tasks.add')\n"
        "def add(x, y):\n"
        "    return x + y\n")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "wiretasks", "worker", "-P", "solo", "-Q", q,
         "-n", f"{q}@localhost", "--without-mingle", "--without-gossip",
         "--without-heartbeat", "-l", "WARNING"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(tmp_path)})
    try:
        ids = [str(uuid.uuid4()) for _ in range(3)]
        broker.publish(task_message("tasks.add", ids[0], (2, 2), queue=q), q)
        broker.publish(task_message("tasks.add", ids[1], (3, 4), queue=q), q, priority=7)
        broker.publish(task_message("tasks.add", ids[2], (5, 5), queue=q), q,
                       not_before=time.time() + 60)  # parked in our delayed set
        results = [store.wait(tid, timeout=30) for tid in ids[:2]]
        assert [r["result"] if r else None for r in results] == [4, 7]
        assert store.get(ids[2]) is None and broker.stats(q).delayed == 1
    finally:
        worker.terminate()
        worker.wait(30)
