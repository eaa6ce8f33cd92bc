"""Worker life cycle against real CLI workers: shutdown, limits, recycling, pools, scaling.

Each test starts ``celeriac -A proj worker`` subprocesses on a project written
into ``tmp_path`` (see ``workerharness.py``), on SQLite and on Redis
when available.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import workerharness as H

from celeryproc import zombie


def _done(project: Any, ids: list[str]) -> bool:
    return project.states(ids)["SUCCESS"] == len(ids)


@pytest.mark.timeout(120)
def test_warm_shutdown_mid_run_loses_nothing_runs_nothing_twice(project_factory: Any) -> None:
    project = project_factory(worker_soft_shutdown_timeout=10)
    ids = project.publish_many("work", [(100,)] * 300)
    worker = project.start_worker("-c", "4")
    H.wait_until(lambda: project.states(ids)["SUCCESS"] >= 20, 30, what="some progress")
    worker.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert worker.wait(15) == 0
    assert time.monotonic() - started < 10  # not the 30 s task: it was aborted (loaded: 6 s)
    finished_before = project.states(ids)["SUCCESS"]
    assert finished_before < len(ids), "shutdown must happen mid-run"
    assert not H.child_pids(worker.pid)
    project.start_worker("-c", "4", name="w2")
    H.wait_until(lambda: _done(project, ids), 60, what="the rest after restart")
    starts = project.runs_by_task("start")
    assert all(starts[i] == 1 for i in ids), "a task ran twice across a warm shutdown"
    assert not project.app.broker.dead_letters()


@pytest.mark.timeout(120)
def test_warm_shutdown_gives_back_tasks_longer_than_grace(project_factory: Any) -> None:
    project = project_factory(worker_soft_shutdown_timeout=1)
    task_id = project.publish_many("long", [(30,)])[0]
    worker = project.start_worker("-c", "1")
    H.wait_until(lambda: project.runs_by_task("start")[task_id] == 1, 30, what="the run")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    queue = project.app.conf.task_default_queue
    stats = project.app.broker.stats(queue)
    assert stats.ready == 1 and stats.leased == 0, stats
    [delivery] = project.app.broker.receive([queue], owner="test", limit=1, timeout=1)
    assert delivery.lost_count == 0, "a warm-shutdown give-back must not count as a failure"


@pytest.mark.timeout(60)
def test_sigquit_is_a_cold_shutdown_that_gives_everything_back(project_factory: Any) -> None:
    project = project_factory()
    task_id = project.publish_many("long", [(30,)])[0]
    worker = project.start_worker("-c", "1")
    H.wait_until(lambda: project.runs_by_task("start")[task_id] == 1, 30, what="the run")
    worker.send_signal(signal.SIGQUIT)
    started = time.monotonic()
    assert worker.wait(15) == 0
    assert time.monotonic() - started < 10  # not the 30 s task: it was aborted (loaded: 6 s)
    stats = project.app.broker.stats(project.app.conf.task_default_queue)
    assert stats.ready == 1 and stats.leased == 0, stats


@pytest.mark.timeout(90)
def test_hard_time_limit_kills_and_replaces_the_child(project_factory: Any) -> None:
    project = project_factory(worker_max_redeliveries=2)
    worker = project.start_worker("-c", "1")
    before = H.wait_until(lambda: H.child_pids(worker.pid), 20, what="the child")
    task_id = project.publish_many("hard", [(30,)])[0]
    meta = H.wait_until(lambda: (m := project.meta(task_id)) and m["status"] == "FAILURE"
                        and m, 20, what="the time limit")
    assert meta["result"]["exc_type"] == "TimeLimitExceeded"
    after = H.wait_until(lambda: H.child_pids(worker.pid), 20, what="a replacement child")
    assert set(after).isdisjoint(before)
    ok = project.publish_many("work", [(1,)] * 5)
    H.wait_until(lambda: _done(project, ok), 20, what="tasks on the new child")
    assert project.runs_by_task("start")[task_id] == 1, "a timed-out task is not redelivered"
    assert not project.app.broker.dead_letters()
    # acks_on_timeout=False: requeued, then dead-lettered at the redelivery limit
    requeued = project.publish_many("hard_requeued", [(30,)])[0]
    _timed_out_dead_letter(project, requeued, "acks_on_timeout")


def _timed_out_dead_letter(project: Any, task_id: str, flag: str) -> None:
    """``task_id`` ran twice (``worker_max_redeliveries=2``), each run killed or stopped
    at its hard limit, then went to the dead-letter store as ``time_limit``."""
    [letter] = H.wait_until(lambda: [d for d in project.app.broker.dead_letters()
                                     if d.message.task_id == task_id], 60,
                            what="the timed-out task's dead letter")
    assert letter.reason == f"time_limit: exceeded its time limit in 2 runs ({flag}=False)"
    assert project.runs_by_task("start")[task_id] == 2
    meta = project.meta(task_id)
    assert meta["status"] == "FAILURE" and meta["result"]["exc_type"] == "TimeLimitExceeded"
    project.app.broker.purge_dead_letters()


@pytest.mark.timeout(150)
@pytest.mark.parametrize("pool", ["prefork", "threads", "solo", "asyncio"])
@pytest.mark.parametrize("by", ["task", "setting"])
def test_hard_time_limit_acks_on_timeout_on_every_pool(tmp_path: Path, pool: str,
                                                       by: str) -> None:
    """A run over its hard limit is FAILURE/TimeLimitExceeded on every pool; then its
    message is acknowledged when ``acks_on_timeout`` (Celery 5.7's resolution) is true,
    else requeued and, at ``worker_max_redeliveries``, dead-lettered as ``time_limit``.
    ``by``: the task options say it, or the ``task_acks_on_timeout`` setting does (and
    a task's own ``acks_on_timeout=True`` wins over it)."""
    conf: dict[str, Any] = {"worker_max_redeliveries": 2}
    if by == "setting":
        conf["task_acks_on_timeout"] = False
    project = H.Project(tmp_path, conf=conf)
    try:
        acked, requeued = ("hard", "hard_requeued") if by == "task" else ("hard_acked", "hard")
        ids = {name: project.publish_many(name, [(30,)])[0] for name in (acked, requeued)}
        old = (project.publish_many("ahard_requeued", [(30,)])[0]
               if pool == "asyncio" and by == "task" else None)
        project.start_worker("-P", pool, "-c", "2")
        _timed_out_dead_letter(project, ids[requeued], "acks_on_timeout")
        if old is not None:  # an async def body, cancelled at its await
            _timed_out_dead_letter(project, old, "acks_on_failure_or_timeout")
        meta = H.wait_until(lambda: (m := project.meta(ids[acked])) and m["status"]
                            == "FAILURE" and m, 30, what="the acknowledged timeout")
        assert meta["result"]["exc_type"] == "TimeLimitExceeded"
        queue = project.app.conf.task_default_queue
        H.wait_until(lambda: (st := project.app.broker.stats(queue)).ready == 0
                     and st.leased == 0, 30, what="every message settled")
        assert project.runs_by_task("start")[ids[acked]] == 1, "an acknowledged timeout reran"
        assert not project.app.broker.dead_letters()
    finally:
        project.stop_all()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pool", ["prefork", "asyncio", "threads", "solo"])
def test_soft_time_limit_raises_inside_the_task(tmp_path: Path, pool: str) -> None:
    """SoftTimeLimitExceeded is raised inside sync and ``async def`` bodies on every pool
    (the task catches it and returns)."""
    project = H.Project(tmp_path)
    try:
        sync_id = project.publish_many("soft", [(10,)])[0]
        async_id = project.publish_many("asoft", [(10,)])[0]
        project.start_worker("-P", pool, "-c", "2")
        for task_id, expected in ((sync_id, "soft limit caught"),
                                  (async_id, "async soft limit caught")):
            meta = H.wait_until(lambda t=task_id: (m := project.meta(t))
                                and m["status"] == "SUCCESS" and m, 20, what="soft limit")
            assert meta["result"] == expected
    finally:
        project.stop_all()


@pytest.mark.timeout(120)
def test_max_tasks_per_child_one_runs_200_tasks(project_factory: Any) -> None:
    project = project_factory()
    ids = project.publish_many("pid", [()] * 200)
    project.start_worker("-c", "2", "--max-tasks-per-child", "1")
    H.wait_until(lambda: _done(project, ids), 100, interval=0.5, what="200 tasks")
    pids = {project.meta(i)["result"] for i in ids}
    assert len(pids) == 200, "every task must run in a fresh child"
    assert not project.app.broker.dead_letters()


@pytest.mark.timeout(60)
def test_max_memory_per_child_recycles_without_losing_tasks(tmp_path: Path) -> None:
    project = H.Project(tmp_path)
    try:
        ids = project.publish_many("pid", [()] * 20)
        project.start_worker("-c", "2", "--max-memory-per-child", "1")
        H.wait_until(lambda: _done(project, ids), 40, what="20 tasks")
        assert len({project.meta(i)["result"] for i in ids}) == 20
    finally:
        project.stop_all()


@pytest.mark.timeout(120)
def test_async_tasks_1000_in_flight_on_the_asyncio_pool(project_factory: Any) -> None:
    project = project_factory()
    ids = project.publish_many("asleep", [(0.5,)] * 1000)
    started = time.monotonic()
    project.start_worker("-P", "asyncio", "-c", "1000")
    H.wait_until(lambda: _done(project, ids), 60, interval=0.02, what="1,000 async tasks")
    elapsed = time.monotonic() - started
    peak = max(project.meta(i)["result"] for i in ids)  # type: ignore[index]
    print(f"\n1,000 x asyncio.sleep(0.5) with --pool asyncio -c 1000: {elapsed:.2f}s "
          f"(including worker start-up), {peak} in flight at once")
    # one event loop runs them side by side (a pool that ran them one by one, or a few at a
    # time, would see 1 or a handful); no timed assertion, the machine may be loaded
    assert peak >= 100, peak


@pytest.mark.timeout(60)
def test_long_task_does_not_block_short_ones(project_factory: Any) -> None:
    project = project_factory()
    long_id = project.publish_many("long", [(4,)])[0]
    short = project.publish_many("work", [(10,)] * 30)
    project.start_worker("-c", "2")
    H.wait_until(lambda: _done(project, short), 20, what="the short tasks")
    meta = project.meta(long_id)
    assert meta is None or meta["status"] != "SUCCESS", "short tasks waited for the long one"


@pytest.mark.timeout(60)
def test_acks_early_task_on_dead_child_fails_with_worker_lost(tmp_path: Path) -> None:
    project = H.Project(tmp_path)
    try:
        task_id = project.publish_many("early", [(30,)])[0]
        worker = project.start_worker("-c", "1")
        H.wait_until(lambda: project.runs_by_task("start")[task_id] == 1, 20, what="the run")
        [child] = H.child_pids(worker.pid)
        os.kill(child, signal.SIGKILL)
        meta = H.wait_until(lambda: (m := project.meta(task_id)) and m["status"] == "FAILURE"
                            and m, 20, what="WorkerLostError")
        assert meta["result"]["exc_type"] == "WorkerLostError"
        time.sleep(1.5)
        assert project.runs_by_task("start")[task_id] == 1, "acks_late=False: at most once"
    finally:
        project.stop_all()


@pytest.mark.timeout(90)
def test_autoscale_grows_and_shrinks(tmp_path: Path) -> None:
    project = H.Project(tmp_path)
    try:
        worker = project.start_worker("--autoscale", "4,1")
        H.wait_until(lambda: len(H.child_pids(worker.pid)) == 1, 20, what="one child")
        ids = project.publish_many("long", [(3,)] * 8)
        H.wait_until(lambda: len(H.child_pids(worker.pid)) == 4, 20, what="four children")
        H.wait_until(lambda: _done(project, ids), 40, what="the load")
        H.wait_until(lambda: len(H.child_pids(worker.pid)) < 4, 30, what="shrinking")
    finally:
        project.stop_all()


@pytest.mark.timeout(60)
def test_sighup_restarts_children_gracefully(tmp_path: Path) -> None:
    project = H.Project(tmp_path)
    try:
        worker = project.start_worker("-c", "2")
        before = H.wait_until(lambda: len(c := H.child_pids(worker.pid)) == 2 and c, 20,
                              what="two children")
        running = project.publish_many("long", [(1,)])
        H.wait_until(lambda: project.runs_by_task("start")[running[0]] == 1, 20, what="run")
        worker.send_signal(signal.SIGHUP)
        H.wait_until(lambda: len(c := H.child_pids(worker.pid)) == 2 and set(c).isdisjoint(
            before), 20, what="two new children")
        ids = project.publish_many("work", [(1,)] * 10)
        H.wait_until(lambda: _done(project, ids + running), 20, what="tasks after SIGHUP")
        assert project.runs_by_task("start")[running[0]] == 1
    finally:
        project.stop_all()


@pytest.mark.timeout(60)
def test_children_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    project = H.Project(tmp_path)
    try:
        worker = project.start_worker("-c", "2")
        children = H.wait_until(lambda: len(c := H.child_pids(worker.pid)) == 2 and c, 20,
                                what="two children")
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)

        def gone() -> bool:
            return all(not os.path.exists(f"/proc/{pid}") or zombie(pid) for pid in children)

        H.wait_until(gone, 15, what="orphaned children to exit")
        ids = project.publish_many("work", [(1,)] * 3)
        time.sleep(1.5)
        assert project.states(ids)["SUCCESS"] == 0, "no orphan may keep consuming"
    finally:
        project.stop_all()


@pytest.mark.timeout(60)
def test_spawn_start_method(tmp_path: Path) -> None:
    project = H.Project(tmp_path, conf={"worker_pool_start_method": "spawn",
                                        "worker_max_tasks_per_child": 5})
    try:
        ids = project.publish_many("pid", [()] * 12)
        worker = project.start_worker("-c", "2")
        H.wait_until(lambda: _done(project, ids), 40, what="tasks on spawned children")
        assert len({project.meta(i)["result"] for i in ids}) >= 3, "children were recycled"
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0
    finally:
        project.stop_all()
