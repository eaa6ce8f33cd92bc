"""``AsyncResult.get()`` on a Redis Cluster follows its key: a waiter subscribed on one
master is notified after the key's slot moved to another (a private cluster: slots are
moved here, which the session's cluster must not see)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from celeryproc import wait_until
from needs import need

pytestmark = pytest.mark.redis


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import redisnodes

    made = redisnodes.start_cluster(tmp_path_factory.mktemp("moving-cluster"))
    yield made
    made.stop()


def test_a_waiter_follows_its_slot_to_another_master(cluster: Any) -> None:
    import redisnodes

    need("celeriac.brokers.redis.cluster_results")
    from celeriac.brokers.registry import store_for_url

    store = store_for_url(cluster.url, options={"global_keyprefix": "moving:"})
    writer = store_for_url(cluster.url, options={"global_keyprefix": "moving:",
                                                 "socket_timeout": 10})  # its own client
    key = store.task_key("t1")
    source = cluster.master_of_key(key)
    target = next(p for p in cluster.masters() if p != source)
    slot = redisnodes.cli(source, "CLUSTER", "KEYSLOT", key).strip()
    ids = {int(row["addr"].rsplit(":", 1)[1]): row["id"] for row in cluster.nodes()}
    got: dict[str, Any] = {}

    def wait() -> None:
        got["meta"] = store.wait("t1", timeout=30)
        got["at"] = time.monotonic()

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(1.0)  # subscribed on the source master
    redisnodes.cli(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
    redisnodes.cli(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
    for port in cluster.masters():  # the slot is empty: nothing to migrate
        redisnodes.cli(port, "CLUSTER", "SETSLOT", slot, "NODE", ids[target])
    wait_until(lambda: cluster.master_of_key(key) == target, 10, what="the slot moved")
    time.sleep(2.0)  # the waiter re-subscribes on the target
    written = time.monotonic()
    writer.set("t1", {"status": "SUCCESS", "result": 5, "task_id": "t1"})
    waiter.join(40)
    assert got["meta"]["result"] == 5
    assert got["at"] - written < 15  # notified, not found by the final read at the timeout
