"""The revocation check of a received batch rides in the lease's round trip on Redis.

With the result store on the broker's Redis connection, ``RECEIVE`` reads each leased
task's meta (:meth:`RedisSettling.peek_revocations`); the worker decides revocation from
what it read and reads itself only the tasks whose id the script could not read. A
revoked task never runs either way.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celery
from celeriac.worker import revocation
from celeriac.worker.consumer import Consumer
from celeriac.worker.pools import SoloPool
from celeriac.worker.prefetch import PrefetchRule
from celeriac.worker.revocation import Revocations

pytestmark = pytest.mark.redis


@pytest.fixture
def app(redis_url: str, key_prefix: str) -> Iterator[Celery]:
    app = Celery("peek", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": key_prefix}
    app.conf.result_backend_transport_options = {"global_keyprefix": key_prefix}
    yield app
    app.close()


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The ids of every revocation read of the worker's own (not in a lease)."""
    seen: list[list[str]] = []
    real = revocation.read_revoked

    def read(app: Any, ids: list[str]) -> Any:
        seen.append(list(ids))
        return real(app, ids)

    monkeypatch.setattr(revocation, "read_revoked", read)
    return seen


def test_the_lease_reads_the_metas_and_no_read_follows(app: Celery,
                                                       reads: list[list[str]]) -> None:
    @app.task(name="peek.noop")
    def noop() -> None:
        return None

    kept, revoked = noop.delay(), noop.delay()
    app.control.revoke(revoked.id)
    assert app.broker.peek_revocations(app.backend)
    batch = app.broker.receive(["celery"], owner="peek-test", limit=10, timeout=5)
    assert sorted(d.message.task_id or "" for d in batch) == sorted([kept.id, revoked.id])
    by_id = {d.message.task_id: d for d in batch}
    assert by_id[kept.id].stored_meta == (kept.id, None)
    assert by_id[revoked.id].stored_meta is not None
    assert by_id[revoked.id].stored_meta[0] == revoked.id
    assert Revocations(app).revoked_in(batch) == {revoked.id}
    assert reads == []  # decided from what the lease read
    # an id the script read that is not the task's (another "id" key came first): read
    other = dataclasses.replace(by_id[revoked.id], stored_meta=(kept.id, None))
    assert Revocations(app).revoked_in([other, by_id[kept.id]]) == {revoked.id}
    assert reads == [[revoked.id]]
    app.broker.ack(batch)


def test_a_celery_producers_envelope_is_read_too(app: Celery, key_prefix: str) -> None:
    """kombu's JSON has a space after each colon; the id is read all the same."""
    task_id = str(uuid.uuid4())
    envelope = {"body": "W1tdLCB7fSwge31d", "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": {"lang": "py", "task": "peek.noop", "id": task_id,
                            "root_id": task_id, "parent_id": None},
                "properties": {"correlation_id": task_id, "delivery_tag": str(uuid.uuid4()),
                               "body_encoding": "base64", "delivery_info": {
                                   "exchange": "", "routing_key": "celery"}, "priority": 0}}
    app.control.revoke(task_id)
    app.broker.client.lpush(f"{key_prefix}celery", json.dumps(envelope))
    assert app.broker.peek_revocations(app.backend)
    batch = app.broker.receive(["celery"], owner="peek-test", limit=1, timeout=5)
    assert [d.message.task_id for d in batch] == [task_id]
    assert batch[0].stored_meta is not None and batch[0].stored_meta[0] == task_id
    assert Revocations(app).revoked_in(batch) == {task_id}
    app.broker.ack(batch)


def test_a_task_revoked_before_it_is_received_never_runs(app: Celery) -> None:
    ran: list[int] = []

    @app.task(name="peek.mark")
    def mark(i: int) -> int:
        ran.append(i)
        return i

    results = [mark.delay(i) for i in range(20)]
    for r in results[::2]:
        app.control.revoke(r.id)
    consumer = Consumer(app, ["celery"], SoloPool(), poll_timeout=0.05,
                        prefetch=PrefetchRule(1, fixed=0))
    thread = threading.Thread(target=consumer.run)
    thread.start()
    deadline = time.monotonic() + 30
    try:
        while (time.monotonic() < deadline
               and not (all(r.ready() for r in results[1::2])
                        and app.broker.stats("celery").ready == 0
                        and app.broker.stats("celery").leased == 0)):
            time.sleep(0.02)
    finally:
        consumer.stop()
        thread.join(10)
    assert sorted(ran) == list(range(1, 20, 2))
    assert all(r.state == "REVOKED" for r in results[::2])
    assert [r.get(timeout=1) for r in results[1::2]] == list(range(1, 20, 2))
