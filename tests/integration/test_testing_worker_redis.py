"""celeriac's pytest fixtures on a configured broker: ``celery_config`` names Redis, and
``celery_worker`` (the real worker, in this process) runs tasks, retries and a chord there."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from celeriac import Celery, chord

pytestmark = pytest.mark.redis


@pytest.fixture
def celery_config(redis_url: str, key_prefix: str) -> dict[str, Any]:
    options = {"global_keyprefix": key_prefix}
    return {"broker_url": redis_url, "result_backend": redis_url,
            "broker_transport_options": options, "result_backend_transport_options": options}


def test_celery_worker_on_redis(celery_app: Celery, celery_worker: Any, redis_url: str,
                                key_prefix: str) -> None:
    @celery_app.task(bind=True, max_retries=2)
    def flaky(self: Any, x: int) -> int:
        if self.request.retries == 0:
            raise self.retry(countdown=0.2)
        return x * 10

    @celery_app.task
    def tsum(xs: list[int]) -> int:
        return sum(xs)

    assert celery_app.broker_url.startswith("redis://")
    assert flaky.delay(4).get(timeout=10) == 40
    assert chord(flaky.s(i) for i in range(3))(tsum.s()).get(timeout=10) == 30
    raw = redis.Redis.from_url(redis_url)
    try:  # the messages and results went through Redis, under this test's prefix
        assert list(raw.scan_iter(match=f"{key_prefix}celery-task-meta-*"))
    finally:
        raw.close()
