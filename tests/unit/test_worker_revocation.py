"""Revocation in the worker (issue 9, point 2), on the one consumer loop with each pool.

A task revoked while it waited (prefetched) never starts; a task revoked while
it runs stays ``REVOKED`` when it finishes (the result store refuses the late
write); ``terminate=True`` cancels an ``async def`` task on the asyncio pool and
is refused with a warning on threads; ``Consumer.revoke`` is the in-process
entry point a remote-control channel calls.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celery
from celeriac.worker.aio import AsyncioPool
from celeriac.worker.pools import SoloPool, ThreadPool
from celeriac.worker.revocation import RECHECK_AFTER
from celeryproc import wait_until


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("revocation", broker="memory://", backend="memory://", set_as_current=False)
    app.gate = threading.Event()  # type: ignore[attr-defined]
    app.ran: list[str] = []  # type: ignore[attr-defined, misc]

    @app.task(name="t.block", bind=True)
    def block(self: Any) -> str:
        app.ran.append(self.request.id)  # type: ignore[attr-defined]
        app.gate.wait(10)  # type: ignore[attr-defined]
        return "late result"

    @app.task(name="t.quick", bind=True)
    def quick(self: Any) -> str:
        app.ran.append(self.request.id)  # type: ignore[attr-defined]
        return "quick"

    @app.task(name="t.asleep", bind=True)
    async def asleep(self: Any, seconds: float) -> str:
        app.ran.append(self.request.id)  # type: ignore[attr-defined]
        await asyncio.sleep(seconds)
        return "woke"

    yield app
    app.gate.set()  # type: ignore[attr-defined]


def settled(app: Celery) -> bool:
    stats = app.broker.stats("celery")
    return stats.ready == 0 and stats.leased == 0


@pytest.mark.parametrize("pool", [lambda: ThreadPool(1), SoloPool], ids=["threads", "solo"])
def test_a_prefetched_task_revoked_while_waiting_never_runs(app: Celery, consume: Any,
                                                            pool: Any) -> None:
    first = app.tasks["t.block"].delay()
    second = app.tasks["t.quick"].delay()
    consume(app, pool(), prefetch=1)
    wait_until(lambda: app.ran == [first.id] and app.broker.stats("celery").leased == 2, 10.0)
    time.sleep(2 * RECHECK_AFTER)  # a waiting job's check older than this is read again
    second.revoke()
    app.gate.set()  # type: ignore[attr-defined]
    wait_until(lambda: settled(app), 10.0)
    assert app.ran == [first.id]  # type: ignore[attr-defined]
    assert second.state == "REVOKED"
    assert first.get(timeout=5) == "late result"


def test_a_late_result_never_overwrites_revoked(app: Celery, consume: Any) -> None:
    result = app.tasks["t.block"].delay()
    consume(app, ThreadPool(2))
    wait_until(lambda: app.ran == [result.id], 10.0)
    result.revoke()
    app.gate.set()  # type: ignore[attr-defined]
    wait_until(lambda: settled(app), 10.0)
    assert result.state == "REVOKED"
    assert app.ran == [result.id]  # type: ignore[attr-defined]


def test_terminate_cancels_an_async_task_on_the_asyncio_pool(app: Celery, consume: Any) -> None:
    long = app.tasks["t.asleep"].delay(30)
    consume(app, AsyncioPool(4))
    wait_until(lambda: app.ran == [long.id], 10.0)
    started = time.monotonic()
    long.revoke(terminate=True, signal="SIGKILL")
    wait_until(lambda: settled(app), 10.0)
    assert time.monotonic() - started < 5
    assert long.state == "REVOKED"
    after = app.tasks["t.asleep"].delay(0)
    assert after.get(timeout=5) == "woke"
    assert app.ran == [long.id, after.id]  # type: ignore[attr-defined]


def test_terminate_on_threads_warns_and_the_task_stays_revoked(
        app: Celery, consume: Any, caplog: pytest.LogCaptureFixture) -> None:
    result = app.tasks["t.block"].delay()
    consume(app, ThreadPool(2))
    wait_until(lambda: app.ran == [result.id], 10.0)
    with caplog.at_level(logging.WARNING, logger="celeriac.worker"):
        result.revoke(terminate=True)
        wait_until(lambda: "cannot be stopped" in caplog.text, 5)
    app.gate.set()  # type: ignore[attr-defined]
    wait_until(lambda: settled(app), 10.0)
    assert result.state == "REVOKED"


def test_consumer_revoke_is_the_entry_point(app: Celery, consume: Any) -> None:
    """Revoked in this process only (no result store write): a waiting job is skipped and a
    running async one terminated."""
    waiting_block = app.tasks["t.block"].delay()
    consumer = consume(app, AsyncioPool(1), prefetch=1)
    wait_until(lambda: app.ran == [waiting_block.id], 10.0)
    queued = app.tasks["t.quick"].delay()
    wait_until(lambda: app.broker.stats("celery").leased == 2, 10.0)
    time.sleep(2 * RECHECK_AFTER)
    consumer.revoke([queued.id])
    app.gate.set()  # type: ignore[attr-defined]
    wait_until(lambda: settled(app), 10.0)
    assert app.ran == [waiting_block.id]  # type: ignore[attr-defined]
    sleeper = app.tasks["t.asleep"].delay(30)
    wait_until(lambda: sleeper.id in app.ran, 10.0)  # type: ignore[attr-defined]
    consumer.revoke([sleeper.id], terminate=True, signal="TERM")
    wait_until(lambda: settled(app), 10.0)
    assert app.backend.get(sleeper.id) is None  # told directly: nothing was stored


def test_a_recheck_reads_the_stale_jobs_due_to_start_before_the_next_one() -> None:
    """Tiny tasks (0.5 ms each): a recheck reads the stale jobs expected to start within
    RECHECK_AFTER (and a margin), not the whole buffer; the rest are read as they near
    the front. Unknown run times, or long ones: every stale job, or the front one."""
    from types import SimpleNamespace

    from celeriac.worker.revocation import RECHECK_AFTER, to_recheck

    now = 100.0
    jobs = [SimpleNamespace(checked_at=now - 1) for _ in range(64)]
    fresh = SimpleNamespace(checked_at=now)
    per_window = int(RECHECK_AFTER / 0.0005) + 2
    assert to_recheck(jobs, now, 0.0005, 1) == jobs[:per_window]
    assert to_recheck(jobs, now, 0.0005, 2) == jobs[:2 * per_window]
    assert to_recheck(jobs, now, None, 1) == jobs
    assert to_recheck(jobs, now, 10.0, 1) == jobs[:2]
    assert to_recheck([fresh, *jobs], now, 10.0, 1) == jobs[:1]  # checked just now: skipped
