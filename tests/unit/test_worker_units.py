"""Unit tests of worker parts: coroutine time limits, autoscale decisions, lease fast path."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from celeriac.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celeriac.worker import autoscale
from celeriac.worker.autoscale import Autoscaler, parse_autoscale
from celeriac.worker.leases import LeaseKeeper
from celeriac.worker.limits import limited


def test_soft_limit_raises_inside_the_coroutine_which_may_clean_up() -> None:
    events: list[str] = []

    async def body() -> str:
        try:
            await asyncio.sleep(5)
        except SoftTimeLimitExceeded:
            events.append("caught")
            await asyncio.sleep(0.01)  # the task may still await after catching it
            return "cleaned up"
        return "finished"

    async def main() -> str:
        return await limited(body(), 0.05, None)

    started = time.monotonic()
    assert asyncio.run(main()) == "cleaned up"
    assert events == ["caught"]
    assert time.monotonic() - started < 1


def test_hard_limit_raises_time_limit_exceeded() -> None:
    async def body() -> None:
        await asyncio.sleep(5)

    async def main() -> None:
        await limited(body(), None, 0.05)

    with pytest.raises(TimeLimitExceeded):
        asyncio.run(main())


def test_outside_cancellation_stays_a_cancellation() -> None:
    async def main() -> None:
        task = asyncio.ensure_future(limited(asyncio.sleep(5), 10, None))
        await asyncio.sleep(0.01)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())


def test_limited_without_limits_returns_the_value() -> None:
    async def body() -> int:
        await asyncio.sleep(0)
        return 7

    async def main() -> int:
        return await limited(body(), None, None)

    assert asyncio.run(main()) == 7


def test_parse_autoscale() -> None:
    assert parse_autoscale(None) is None
    assert parse_autoscale("10,3") == (10, 3)
    assert parse_autoscale("3,10") == (10, 3)
    assert parse_autoscale("4") == (4, 1)
    with pytest.raises(ValueError):
        parse_autoscale("many")


class _Stats:
    def __init__(self, ready: int) -> None:
        self.ready = ready


class _App:
    def __init__(self) -> None:
        self.waiting = 0
        outer = self

        class Broker:
            def stats(self, queue: str) -> _Stats:
                return _Stats(outer.waiting)

        self.broker = Broker()


def test_autoscaler_grows_with_waiting_work_and_shrinks_when_idle(
        monkeypatch: pytest.MonkeyPatch) -> None:
    app = _App()
    clock = [100.0]
    monkeypatch.setattr(autoscale.time, "monotonic", lambda: clock[0])
    scaler = Autoscaler(app, ["celery"], high=6, low=1)  # type: ignore[arg-type]
    app.waiting = 10
    assert scaler.decide(running=1, busy=1) == 6
    clock[0] += 1.1
    assert scaler.decide(running=6, busy=3) == 6, "free children: no growth, no shrink"
    app.waiting = 0
    for _ in range(3):
        clock[0] += 1.1
        assert scaler.decide(running=6, busy=0) == 6
    clock[0] += autoscale.KEEPALIVE
    assert scaler.decide(running=6, busy=0) == 5
    for _ in range(40):
        clock[0] += autoscale.KEEPALIVE
        scaler.decide(running=scaler._target, busy=0)
    assert scaler._target == 1


class _RenewCounter:
    lease_seconds = 30.0

    def __init__(self) -> None:
        self.calls = 0
        self.answer = True

    def renew(self, deliveries: list[Any], seconds: float | None = None) -> list[bool]:
        self.calls += 1
        return [self.answer for _ in deliveries]


class _Delivery:
    def __init__(self, tag: str, lease_expires: float) -> None:
        self.tag = tag
        self.lease_expires = lease_expires

        class Message:
            task_name, task_id = "t", tag

        self.message = Message()


def test_still_owner_skips_the_round_trip_while_the_lease_is_fresh() -> None:
    broker = _RenewCounter()
    keeper = LeaseKeeper(broker, 10)  # type: ignore[arg-type]
    fresh = _Delivery("1", time.time() + 30)
    keeper.hold([fresh])  # type: ignore[list-item]
    assert keeper.still_owner(fresh)  # type: ignore[arg-type]
    assert broker.calls == 0
    stale = _Delivery("2", time.time() + 1)
    keeper.hold([stale])  # type: ignore[list-item]
    broker.answer = False
    assert not keeper.still_owner(stale)  # type: ignore[arg-type]
    assert broker.calls == 1
    assert not keeper.still_owner(stale), "a lost lease stays lost"  # type: ignore[arg-type]
    assert broker.calls == 1


def _memory_app() -> Any:
    from celeriac import Celery

    app = Celery("units", broker="memory://", backend="memory://", set_as_current=False)

    @app.task(name="units.noop")
    def noop() -> None:
        return None

    return app


def test_node_heartbeat_record_is_listed_and_removed(tmp_path: Any) -> None:
    from celeriac.worker.health import NodeHealth, read_nodes

    app = _memory_app()
    alive = tmp_path / "alive"
    health = NodeHealth(app, "w1@host", pool="prefork", concurrency=2, queues=["celery"],
                        liveness_file=str(alive))
    health.progress()
    health.beat(processed=5, busy=1)
    [node] = read_nodes(app)
    assert node["hostname"] == "w1@host" and node["processed"] == 5 and node["busy"] == 1
    assert alive.exists()
    health.remove()
    assert read_nodes(app) == []


def test_ack_batcher_sends_one_call_and_drops_leases() -> None:
    from celeriac.worker.job import AckBatcher

    app = _memory_app()
    for _ in range(3):
        app.send_task("units.noop")
    broker = app.broker
    deliveries = broker.receive(["celery"], owner="o", limit=3, timeout=0)
    keeper = LeaseKeeper(broker, 10)
    keeper.hold(deliveries)
    batcher = AckBatcher(broker, keeper)
    for d in deliveries:
        batcher.add(d)
    assert len(batcher) == 3
    batcher.flush()
    assert len(batcher) == 0 and keeper.held() == []
    stats = broker.stats("celery")
    assert stats.ready == 0 and stats.leased == 0
