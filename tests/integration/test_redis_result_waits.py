"""The RESP3 wait connection (:mod:`celeriac.brokers.redis.result_waits`): a result written
before or after the subscription is found, threads share the connection and hand the
reading on, a killed connection and a fork are survived, timeouts hold."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from typing import Any

import pytest
import redis

from celeriac.brokers.redis.result_waits import ResultWaits, Unsupported, usable
from celeriac.brokers.redis.results import RedisResultStore, waits_for

pytestmark = pytest.mark.redis


@pytest.fixture
def store(redis_url: str, key_prefix: str) -> RedisResultStore:
    return RedisResultStore(redis_url, options={"global_keyprefix": key_prefix})


def meta(task_id: str, status: str = "SUCCESS", result: Any = 4) -> dict[str, Any]:
    return {"status": status, "result": result, "traceback": None, "children": [],
            "date_done": "2026-11-30T13:36:40.118348+00:00", "task_id": task_id}


def waits_of(store: RedisResultStore) -> ResultWaits:
    waits = store._waits()
    if waits is None:
        pytest.skip("hiredis 3 is not installed: waits use the RESP2 listener")
    return waits


def set_later(store: RedisResultStore, tid: str, started: threading.Event,
              **fields: Any) -> threading.Thread:
    """Write ``tid``'s meta once ``started`` is set (the waiter is registered)."""
    def run() -> None:
        started.wait(10)
        store.set(tid, meta(tid, **fields))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_result_stored_before_the_wait_is_found(store: RedisResultStore) -> None:
    waits_of(store)
    tid = str(uuid.uuid4())
    store.set(tid, meta(tid, result="early"))
    got = store.wait(tid, timeout=10)
    assert got is not None and got["result"] == "early"


def test_a_result_written_while_waiting_wakes_the_waiter(store: RedisResultStore,
                                                         raw: redis.Redis,
                                                         key_prefix: str) -> None:
    waits = waits_of(store)
    tid = str(uuid.uuid4())
    joined = threading.Event()
    original = waits.join

    def join(key: str) -> Any:
        wait = original(key)
        joined.set()
        return wait

    waits.join = join  # type: ignore[method-assign]
    try:
        writer = set_later(store, tid, joined, result="late")
        got = store.wait(tid, timeout=None)  # no deadline: only the PUBLISH can end it
    finally:
        del waits.join
    writer.join(10)
    assert got is not None and got["result"] == "late"
    channel = f"{key_prefix}celery-task-meta-{tid}"
    assert raw.pubsub_numsub(channel) == [(channel.encode(), 0)]  # unsubscribed on leaving


def test_threads_share_the_connection_and_pass_the_reading_on(
        store: RedisResultStore) -> None:
    waits = waits_of(store)
    ids = [str(uuid.uuid4()) for _ in range(6)]
    results: dict[str, Any] = {}
    for_short = str(uuid.uuid4())

    def wait(tid: str, timeout: float | None) -> None:
        results[tid] = store.wait(tid, timeout=timeout)

    # two threads on one key, the others on their own; one more gives up early: whoever
    # reads when it leaves must hand the reading to a thread still waiting
    threads = [threading.Thread(target=wait, args=(tid, None)) for tid in [*ids, ids[0]]]
    short = threading.Thread(target=wait, args=(for_short, 0.3))
    for thread in [*threads, short]:
        thread.start()
    short.join(10)
    assert not short.is_alive() and results[for_short] is None
    for i, tid in enumerate(ids):
        store.set(tid, meta(tid, result=i))
    for thread in threads:
        thread.join(15)
    assert not any(thread.is_alive() for thread in threads)
    assert [results[tid]["result"] for tid in ids] == list(range(6))
    assert not waits._waits and not waits._channels


def test_a_killed_connection_is_replaced_and_the_wait_completes(
        store: RedisResultStore, raw: redis.Redis) -> None:
    waits = waits_of(store)
    tid, first = str(uuid.uuid4()), str(uuid.uuid4())
    store.set(first, meta(first))
    assert store.wait(first, timeout=10) is not None  # the connection exists
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(store.wait(tid, timeout=None)))
    thread.start()
    for _ in range(2000):  # until the thread registered (bounded: 20 s)
        if waits._waits and waits._sock is not None:
            break
        time.sleep(0.01)
    host, port = waits._sock.getsockname()[:2]
    raw.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}")
    store.set(tid, meta(tid, result="after the kill"))  # maybe before the reconnect
    thread.join(15)
    assert not thread.is_alive() and box[0]["result"] == "after the kill"


def test_a_forked_child_uses_its_own_connection(store: RedisResultStore) -> None:
    waits = waits_of(store)
    warm = str(uuid.uuid4())
    store.set(warm, meta(warm))
    assert store.wait(warm, timeout=10) is not None
    parent_sock = waits._sock
    tid = str(uuid.uuid4())
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: waits on its own connection, reports, exits
        try:
            child_waits = store._waits()
            got = store.wait(tid, timeout=20)
            report = {"result": None if got is None else got["result"],
                      "own": child_waits is not waits and child_waits._sock is not parent_sock}
            os.write(write, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write)
    store.set(tid, meta(tid, result="for the child"))
    with os.fdopen(read) as pipe:
        report = json.loads(pipe.read() or "{}")
    os.waitpid(pid, 0)
    assert report == {"result": "for the child", "own": True}
    again = str(uuid.uuid4())  # the parent's connection is untouched by the child
    store.set(again, meta(again))
    assert store.wait(again, timeout=10) is not None and waits._sock is parent_sock


def test_timeouts_return_the_last_meta_seen(store: RedisResultStore) -> None:
    waits_of(store)
    tid = str(uuid.uuid4())
    assert store.wait(tid, timeout=0.2) is None
    store.set(tid, meta(tid, status="STARTED"))
    last = store.wait(tid, timeout=0.2)
    assert last is not None and last["status"] == "STARTED"
    assert store.wait(tid, timeout=0) == last


def test_tls_stores_keep_the_resp2_listener() -> None:
    client = redis.Redis.from_url("rediss://127.0.0.1:1/0")
    assert not usable(client)
    assert waits_for("rediss://127.0.0.1:1/0", {}) is None


def test_a_server_refusing_resp3_gets_the_resp2_listener(store: RedisResultStore,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    waits_of(store)

    def refuse(self: ResultWaits, *, quiet: bool) -> None:  # what HELLO 3 on Redis 5 does
        raise Unsupported("ERR unknown command 'HELLO'")

    monkeypatch.setattr(ResultWaits, "_connect_locked", refuse)
    tid = str(uuid.uuid4())
    store.set(tid, meta(tid, result="via RESP2"))
    got = store.wait(tid, timeout=10)
    assert got is not None and got["result"] == "via RESP2"
    assert store._waits() is None  # this process keeps the listener for this store
    assert RedisResultStore(store.url, options=store.options)._waits() is None
