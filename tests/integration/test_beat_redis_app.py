"""Beat with a real app on the Redis broker: store keys beside the broker's, messages on Redis."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from celeriac import Celery
from celeriac.beat.scheduler import Scheduler
from celeriac.brokers.redis.beat_store import RedisStore
from celeriac.schedules.clock import ManualClock
from celeriac.schedules.policy import fire_task_id

pytestmark = pytest.mark.redis
UTC = timezone.utc
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def app(redis_url: str, key_prefix: str) -> Iterator[Celery]:
    app = Celery("proj", broker=redis_url)
    app.conf.broker_transport_options = {"global_keyprefix": key_prefix}
    yield app
    app.close()


def test_two_schedulers_on_the_redis_broker(app: Celery, key_prefix: str) -> None:
    app.conf.beat_schedule = {"ping": {"task": "proj.ping", "schedule": 10, "args": (1,)}}
    clock = ManualClock(START)
    scheds = [Scheduler(app, clock=clock, node_id=n) for n in ("a", "b")]
    for sched in scheds:
        sched.setup()
        assert isinstance(sched.store, RedisStore)
        assert sched.store.prefix == key_prefix + "celeriac:beat:"
    while clock.now() < START + timedelta(seconds=60.5):
        for sched in scheds:
            sched.tick()
        clock.advance(0.5)
    deliveries = app.broker.receive(["celery"], owner="check", limit=100, timeout=0)
    app.broker.ack(deliveries)
    ids = [d.message.headers["id"] for d in deliveries]
    expected = {fire_task_id("ping", START + timedelta(seconds=10 * k)) for k in range(1, 7)}
    assert sorted(ids) == sorted(expected)
    assert all(d.message.headers["celery_beat_task"] is True for d in deliveries)
    [info] = app.schedules.list()
    assert info.total_run_count == 6 and info.last_run_at == START + timedelta(seconds=60)
    for sched in scheds:
        sched.close()
