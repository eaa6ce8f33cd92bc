"""Worker heartbeat records on Redis live under ``global_keyprefix``, like every other key."""

from __future__ import annotations

import pytest
import redis

from celeriac import Celery
from celeriac.worker.health import NodeHealth, read_nodes

pytestmark = pytest.mark.redis


def test_node_records_are_written_under_the_key_prefix(redis_url: str, key_prefix: str) -> None:
    app = Celery("health", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.result_backend_transport_options = {"global_keyprefix": key_prefix}
    other = Celery("other", broker=redis_url, backend=redis_url, set_as_current=False)
    other.conf.result_backend_transport_options = {"global_keyprefix": key_prefix + "other:"}
    raw = redis.Redis.from_url(redis_url)
    try:
        health = NodeHealth(app, "w1@host", pool="solo", concurrency=1, queues=["celery"])
        health.beat(processed=1, busy=0)
        assert raw.exists(f"{key_prefix}celeriac-workers")
        assert raw.exists(f"{key_prefix}celeriac-worker-w1@host")
        [node] = read_nodes(app)
        assert node["hostname"] == "w1@host"
        assert read_nodes(other) == []  # another prefix is another deployment
        health.remove()
        assert read_nodes(app) == []
        assert not raw.exists(f"{key_prefix}celeriac-worker-w1@host")
    finally:
        app.close()
        other.close()
        raw.close()
