"""Chaos and failure tests against real prefork workers started by the CLI.

kill -9 of random children under load (0 lost, duplicates only among tasks a
killed child held: running, or finished and not yet acknowledged), poison pills
dead-lettered after exactly 3 deliveries while normal tasks finish, a SIGSTOPped
child fenced after its lease lapsed, and long tasks kept alive by heartbeats.
Every test runs on SQLite and, when
the Redis broker is importable and a server is up, on Redis too.
"""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Any

import pytest
import workerharness as H


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill9_random_children_loses_nothing(project_factory: Any) -> None:
    project = project_factory()
    rng = random.Random(7)
    ids = project.publish_many("work", [(rng.randint(1, 50),) for _ in range(10_000)])
    worker = project.start_worker("-c", "10")
    killed = H.kill_children_at_random(project, worker, ids, rng)
    states = project.states(ids)
    starts = project.runs_by_task("start")
    # a child runs one task at a time; what it finished just before but had not
    # acknowledged yet (batched with its next lease) runs again too
    inflight_at_kill = H.held_at_kill(project, killed)
    duplicates = {tid for tid, n in starts.items() if n > 1}
    never_ran = [tid for tid in ids if starts[tid] == 0]
    dead = project.app.broker.dead_letters(limit=100)
    print(f"\nkill -9 chaos: tasks={len(ids)} kills={len(killed)} "
          f"succeeded={states['SUCCESS']} lost={len(ids) - states['SUCCESS']} "
          f"duplicated_exec={len(duplicates)} inflight_at_kill={len(inflight_at_kill)} "
          f"never_ran={len(never_ran)} dead_letters={len(dead)}")
    assert len(killed) >= 3, "the test must actually kill children"
    assert states["SUCCESS"] == len(ids), states
    assert not never_ran
    assert duplicates <= inflight_at_kill, "a task ran twice but no killed child held it"
    assert not dead


@pytest.mark.timeout(180)
def test_poison_pill_dead_lettered_after_three_deliveries(project_factory: Any) -> None:
    project = project_factory()
    poison_id = H.poison_pill_dead_lettered(project, normal=1000, wait=30)
    meta = project.meta(poison_id)
    assert meta is not None and meta["status"] == "FAILURE"
    assert meta["result"]["exc_type"] == "WorkerLostError"


@pytest.mark.timeout(60)
def test_reject_on_worker_lost_false_never_reruns(project_factory: Any) -> None:
    project = project_factory()
    task_id = project.publish_many("poison_once", [()])[0]
    project.start_worker("-c", "1")
    H.wait_until(lambda: project.app.broker.dead_letters(), 30, what="the dead letter")
    assert project.runs_by_task("start")[task_id] == 1
    assert project.meta(task_id)["result"]["exc_type"] == "WorkerLostError"


@pytest.mark.timeout(120)
def test_retry_on_worker_lost_retries_the_task_as_celery(project_factory: Any) -> None:
    """``retry_on_worker_lost=True`` (task option): a task whose child is killed (kill -9
    mid-task) is retried as ``self.retry()`` would (``retries + 1``), so its next run
    sees one retry; past ``max_retries`` (1) it fails with ``WorkerLostError`` and its
    message goes to the dead-letter store."""
    project = project_factory()
    once, always = (project.publish_many("die_retried", [(kills,)])[0] for kills in (1, 5))
    project.start_worker("-c", "1")
    meta = H.wait_until(lambda: (m := project.meta(once)) and m["status"] == "SUCCESS"
                        and m, 60, what="the retried run")
    assert meta["result"] == 1, "the run after the loss is a retry (request.retries == 1)"
    [letter] = H.wait_until(lambda: project.app.broker.dead_letters(), 60,
                            what="the dead letter past max_retries")
    assert letter.message.task_id == always
    assert letter.reason == ("worker_lost: lost with its worker after 1 retries "
                             "(retry_on_worker_lost, max_retries=1)")
    assert project.meta(always)["result"]["exc_type"] == "WorkerLostError"
    starts = project.runs_by_task("start")
    assert starts[once] == 2 and starts[always] == 2


@pytest.mark.timeout(120)
def test_retry_on_worker_lost_retries_a_task_acknowledged_before_it_ran(
        project_factory: Any) -> None:
    """``acks_late=False``: the message is gone when the child dies, yet Celery retries the
    task; so does the supervisor, up to ``max_retries``, then records WorkerLostError."""
    project = project_factory()
    once, always = (project.publish_many("die_retried_early", [(kills,)])[0]
                    for kills in (1, 5))
    project.start_worker("-c", "1")
    meta = H.wait_until(lambda: (m := project.meta(once)) and m["status"] == "SUCCESS"
                        and m, 60, what="the retried run")
    assert meta["result"] == 1
    meta = H.wait_until(lambda: (m := project.meta(always)) and m["status"] == "FAILURE"
                        and m, 60, what="the failure past max_retries")
    assert meta["result"]["exc_type"] == "WorkerLostError"
    starts = project.runs_by_task("start")
    assert starts[once] == 2 and starts[always] == 2
    assert not project.app.broker.dead_letters()


@pytest.mark.timeout(120)
def test_task_retry_on_worker_lost_setting_retries_lost_tasks(project_factory: Any) -> None:
    project = project_factory(task_retry_on_worker_lost=True)
    task_id = project.publish_many("die_until", [(2,)])[0]
    project.start_worker("-c", "1")
    meta = H.wait_until(lambda: (m := project.meta(task_id)) and m["status"] == "SUCCESS"
                        and m, 60, what="the run after two retries")
    assert meta["result"] == 2  # three runs: max_retries (3) not reached
    assert project.runs_by_task("start")[task_id] == 3
    assert not project.app.broker.dead_letters()


@pytest.mark.timeout(120)
def test_long_task_with_short_lease_runs_exactly_once(project_factory: Any) -> None:
    project = project_factory(worker_lease_seconds=5, worker_heartbeat_interval=1)
    task_id = project.publish_many("long", [(60,)])[0]
    project.start_worker("-c", "2", name="w1")
    project.start_worker("-c", "2", name="w2")
    meta = H.wait_until(lambda: (m := project.meta(task_id)) and m["status"] == "SUCCESS"
                        and m, 100, interval=0.5, what="the 60 s task")
    assert meta["status"] == "SUCCESS"
    assert project.runs_by_task("start")[task_id] == 1
    assert project.runs_by_task("done")[task_id] == 1


@pytest.mark.timeout(120)
def test_sigstopped_child_is_fenced(project_factory: Any) -> None:
    project = project_factory(worker_lease_seconds=2, worker_heartbeat_interval=0.5)
    task_id = project.publish_many("long", [(3,)])[0]
    first = project.start_worker("-c", "1", name="w1")
    H.wait_until(lambda: project.runs_by_task("start")[task_id] == 1, 30,
                 what="the first run")
    [child] = H.child_pids(first.pid)
    os.kill(child, signal.SIGSTOP)
    try:
        project.start_worker("-c", "1", name="w2")
        meta = H.wait_until(lambda: (m := project.meta(task_id)) and m["status"] == "SUCCESS"
                            and m, 30, what="the second worker's run")
        winner = meta["result"]
        assert winner != child
    finally:
        os.kill(child, signal.SIGCONT)
    # the woken child finishes its sleep, then must neither ack nor overwrite the result
    H.wait_until(lambda: project.runs_by_task("done")[task_id] == 2, 30,
                 what="the woken child to finish its body")
    time.sleep(1.0)
    assert project.meta(task_id)["result"] == winner
    assert project.runs_by_task("start")[task_id] == 2
    assert "lease lost" in project.log_text("w1").lower()
    stats = project.app.broker.stats(project.app.conf.task_default_queue)
    assert stats.ready == 0 and stats.leased == 0
