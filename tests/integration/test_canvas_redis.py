"""Canvas on Redis (broker and result store) with an in-process threaded worker; the
chain/group/chord tests run on one Redis and on a local Redis Cluster
(``redis+cluster://``, 3 masters + 3 replicas, started by the session fixture)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celery, chord, group
from celeriac.exceptions import ChordError
from needs import need

T = 20


ENGINES = pytest.mark.parametrize("app", ["redis", "redis-cluster"], indirect=True)


@pytest.fixture
def app(request: pytest.FixtureRequest) -> Iterator[Celery]:
    need("celeriac.brokers.redis.client")
    from celeriac.worker.consumer import Consumer
    from celeriac.worker.pools import ThreadPool

    if getattr(request, "param", "redis") == "redis-cluster":
        redis_url = request.getfixturevalue("redis_cluster_url")
        key_prefix = request.getfixturevalue("cluster_key_prefix")
    else:
        redis_url = request.getfixturevalue("redis_url")
        key_prefix = request.getfixturevalue("key_prefix")
    app = Celery("canvas_redis", broker=redis_url, backend=redis_url)
    app.conf.broker_transport_options = {"global_keyprefix": key_prefix}
    app.conf.result_backend_transport_options = {"global_keyprefix": key_prefix}

    @app.task(name="tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="tasks.tsum")
    def tsum(xs: list[int]) -> int:
        return sum(xs)

    @app.task(name="tasks.boom")
    def boom(*args: Any) -> None:
        raise ValueError("boom")

    @app.task(name="tasks.replaced", bind=True)
    def replaced(self: Any, x: int) -> None:
        raise self.replace(add.s(x, 1) | add.s(10))

    consumer = Consumer(app, ["celery"], ThreadPool(4), poll_timeout=0.1)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    yield app
    consumer.stop()
    thread.join(10)
    app.close()


@ENGINES
def test_chain_group_chord_on_redis(app: Celery) -> None:
    add, tsum = app.tasks["tasks.add"], app.tasks["tasks.tsum"]
    res = (add.s(1, 2) | add.s(3) | add.s(4)).delay()
    assert res.get(timeout=T) == 10 and res.parent.get(timeout=T) == 6
    g = group(add.s(i, i) for i in range(100)).apply_async()
    assert g.get(timeout=T) == [2 * i for i in range(100)]
    g.save()
    from celeriac.result import GroupResult

    again = GroupResult.restore(g.id, app=app)
    assert again is not None and again.get(timeout=T)[99] == 198
    body = chord([add.s(i, 1) for i in range(200)])(tsum.s())
    assert body.get(timeout=T) == sum(range(200)) + 200


@ENGINES
def test_chunks_map_replace_link_nesting_on_redis(app: Celery) -> None:
    add, tsum = app.tasks["tasks.add"], app.tasks["tasks.tsum"]
    assert add.chunks([(i, i) for i in range(5)], 2).delay().get(timeout=T) == [
        [0, 2], [4, 6], [8]]
    assert add.starmap([(1, 2)]).delay().get(timeout=T) == [3]
    assert tsum.map([[1, 2]]).delay().get(timeout=T) == [3]
    assert (app.tasks["tasks.replaced"].s(1) | add.s(100)).delay().get(timeout=T) == 112
    sig = add.s(1, 1)
    callback = add.s(5).set(task_id=f"cb-{sig.freeze().id}")
    sig.link(callback)
    assert sig.delay().get(timeout=T) == 2
    assert app.AsyncResult(callback.id).get(timeout=T) == 7
    header = group(add.s(1, 1) | add.s(1), chord([add.s(1, 0), add.s(2, 0)], tsum.s()))
    assert chord(header, tsum.s()).delay().get(timeout=T) == 3 + 3


@ENGINES
def test_chord_failure_on_redis(app: Celery) -> None:
    add, tsum, boom = (app.tasks[n] for n in ("tasks.add", "tasks.tsum", "tasks.boom"))
    res = chord([add.s(1, 1), boom.s(), add.s(2, 2)], tsum.s()).apply_async()
    with pytest.raises(ChordError, match=r"Dependency .* raised ValueError\('boom'\)"):
        res.get(timeout=T, follow_parents=False)


def _real_celery(redis_url: str, key_prefix: str) -> Any:
    from celery import Celery as RealCelery

    real = RealCelery("tasks", broker=redis_url, backend=redis_url, set_as_current=False)
    real.conf.broker_transport_options = {"global_keyprefix": key_prefix}
    real.conf.result_backend_transport_options = {"global_keyprefix": key_prefix}

    @real.task(name="tasks.add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    @real.task(name="tasks.tsum", shared=False)
    def tsum(xs: list[int]) -> int:
        return sum(xs)

    return real


def test_canvas_sent_by_a_celery_client_runs_on_celeriac(app: Celery, redis_url: str,
                                                         key_prefix: str) -> None:
    from celery import chord as real_chord

    real = _real_celery(redis_url, key_prefix)
    add, tsum = real.tasks["tasks.add"], real.tasks["tasks.tsum"]
    assert (add.s(1, 2) | add.s(3) | add.s(4)).delay().get(timeout=T) == 10
    # Celery puts the chord size in its own `.s` key, which the join reads
    assert real_chord([add.s(i, i) for i in range(10)])(tsum.s()).get(timeout=T) == 90


def test_a_celery_chord_whose_members_end_before_celery_writes_its_size(
        app: Celery, redis_url: str, key_prefix: str) -> None:
    """Celery's client writes the chord size (``.s``) only just before it publishes the
    last header task; under load the members sent before can have run by then. They
    must count: here they have all ended before the size is written, every time."""
    import time
    import uuid

    from celery import chord as real_chord

    real = _real_celery(redis_url, key_prefix)
    add, tsum = real.tasks["tasks.add"], real.tasks["tasks.tsum"]
    ids = [f"member-{i}-{uuid.uuid4().hex[:8]}" for i in range(5)]
    header = [add.s(i, i).set(task_id=task_id) for i, task_id in enumerate(ids)]
    write_size = real.backend.set_chord_size

    def late_size(group_id: str, size: int) -> None:
        deadline = time.monotonic() + T
        while not all(real.AsyncResult(i).ready() for i in ids[:-1]):
            assert time.monotonic() < deadline, "the first members did not run"
            time.sleep(0.05)
        write_size(group_id, size)

    real.backend.set_chord_size = late_size
    result = real_chord(header)(tsum.s())
    assert result.get(timeout=T) == 20
    assert [r.get(timeout=T) for r in map(real.AsyncResult, ids)] == [0, 2, 4, 6, 8]


CELERY_TASKS = '''
import os
from celery import Celery
app = Celery("tasks", broker=os.environ["URL"], backend=os.environ["URL"])
app.conf.broker_transport_options = {"global_keyprefix": os.environ["KP"]}
app.conf.result_backend_transport_options = {"global_keyprefix": os.environ["KP"]}

@app.task(name="tasks.add")
def add(x, y):
    return x + y

@app.task(name="tasks.tsum")
def tsum(xs):
    return sum(xs)
'''


def test_canvas_sent_by_celeriac_runs_on_a_celery_worker(redis_url: str, key_prefix: str,
                                                         tmp_path: Any) -> None:
    import sys

    from celeryproc import WorkerProcess

    need("celeriac.brokers.redis.client")
    (tmp_path / "celtasks.py").write_text(CELERY_TASKS)
    worker = WorkerProcess(
        [sys.executable, "-m", "celery", "-A", "celtasks", "worker", "-P", "solo", "-l",
         "INFO", "--without-mingle", "--without-gossip"], tmp_path,
        env={"URL": redis_url, "KP": key_prefix})
    try:
        app = Celery("canvas_client", broker=redis_url, backend=redis_url)
        app.conf.broker_transport_options = {"global_keyprefix": key_prefix}
        app.conf.result_backend_transport_options = {"global_keyprefix": key_prefix}

        @app.task(name="tasks.add")
        def add(x: int, y: int) -> int:
            return x + y

        @app.task(name="tasks.tsum")
        def tsum(xs: list[int]) -> int:
            return sum(xs)

        assert (add.s(1, 2) | add.s(3) | add.s(4)).delay().get(timeout=60) == 10
        assert chord([add.s(i, i) for i in range(5)])(tsum.s()).get(timeout=60) == 20
        assert group(add.s(i, 1) for i in range(5)).delay().get(timeout=60) == [1, 2, 3, 4, 5]
        app.close()
    finally:
        worker.stop()
