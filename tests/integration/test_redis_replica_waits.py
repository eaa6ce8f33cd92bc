"""``wait_for_replicas``: a publish returns once N replicas have it, or raises (a private
master + replica, ``tests/redisnodes.py``; on one Redis and on a Redis Cluster)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from celeriac.brokers.base import Broker, Publish
from celeriac.exceptions import OperationalError
from celeriac.messages import task_message
from needs import need

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import redisnodes

    setup = redisnodes.start_sentinels(tmp_path_factory.mktemp("replicated"), count=0)
    yield setup
    setup.stop()


def make(url: str, wanted: int, prefix: str) -> Broker:
    need("celeriac.brokers.redis.client")
    from celeriac.brokers.registry import broker_for_url

    return broker_for_url(url, options={"global_keyprefix": prefix,
                                        "wait_for_replicas": wanted,
                                        "wait_for_replicas_timeout": 0.2})


def message(n: int) -> Any:
    return task_message("tests.add", f"w-{n}", (n, 1), {}, queue="w")


@pytest.mark.parametrize("where", ["redis", "redis-cluster"])
def test_publish_waits_for_the_replicas_it_can_have(where: str, replicated: Any,
                                                    request: pytest.FixtureRequest) -> None:
    if where == "redis":
        url, prefix = f"redis://127.0.0.1:{replicated.master_port}/0", "rw:"
    else:
        url = request.getfixturevalue("redis_cluster_url")
        prefix = request.getfixturevalue("cluster_key_prefix")
    one = make(url, 1, prefix)
    one.publish(message(1), "w")  # the first publish of a queue: a batch
    one.publish(message(2), "w")  # then the one-script fast path
    one.publish_many([Publish(message(3), "w"), Publish(message(4), "other")])
    assert one.stats("w").ready == 3 and one.stats("other").ready == 1
    two = make(url, 2, prefix)  # every master has one replica: never met
    with pytest.raises(OperationalError, match="only 1 of 2 replicas"):
        two.publish(message(5), "w")
    assert two.stats("w").ready == 4  # on the master all the same: it may still run
    for broker in (one, two):
        broker.purge("w")
        broker.purge("other")
        broker.close()


@pytest.mark.parametrize("where", ["redis", "redis-cluster"])
def test_delay_waits_too(where: str, replicated: Any, request: pytest.FixtureRequest) -> None:
    """``delay()`` (every publishing path of the app, the repeated call's included)
    returns only once the replicas have the message, or raises."""
    from celeriac import Celery

    if where == "redis":
        url, prefix = f"redis://127.0.0.1:{replicated.master_port}/0", "rd:"
    else:
        url = request.getfixturevalue("redis_cluster_url")
        prefix = request.getfixturevalue("cluster_key_prefix")
    for wanted in (1, 2):
        app = Celery("waits", broker=url)
        app.conf.broker_transport_options = {"global_keyprefix": f"{prefix}{wanted}:",
                                             "wait_for_replicas": wanted,
                                             "wait_for_replicas_timeout": 0.2}
        app.conf.task_publish_retry = False

        @app.task(name="tests.noop", shared=False)
        def noop(n: int) -> int:
            return n

        for n in range(3):  # the first call of a queue, then the repeated ones
            if wanted == 1:
                noop.delay(n)
            else:
                with pytest.raises(OperationalError, match="only 1 of 2 replicas"):
                    noop.delay(n)
        assert app.broker.stats("celery").ready == 3
        app.broker.purge("celery")
        app.close()
