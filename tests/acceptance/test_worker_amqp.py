"""The real CLI worker (prefork) on RabbitMQ: tasks run, kill -9 loses nothing, poison
pills are dead-lettered after three deliveries, a long task runs once.

Uses the project harness of ``workerharness.py`` with ``amqp://`` (a vhost of
the test's own) as broker and SQLite as result store. On RabbitMQ a lease lasts
while the connection of the process that received the message lives: a child
killed with SIGKILL closes its connection and RabbitMQ redelivers at once.
"""

from __future__ import annotations

import random
import signal
from typing import Any

import pytest
import workerharness as H


@pytest.mark.timeout(180)
def test_prefork_worker_runs_tasks_and_stops_cleanly(amqp_project: Any) -> None:
    project = amqp_project()
    ids = project.publish_many("work", [(5,)] * 300)
    worker = project.start_worker("-c", "2")
    H.wait_until(lambda: project.states(ids)["SUCCESS"] == len(ids), 120,
                 what="300 tasks on RabbitMQ")
    assert set(project.runs_by_task("start").values()) == {1}
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    stats = project.app.broker.stats("work")
    assert (stats.ready, stats.leased, stats.dead) == (0, 0, 0)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill9_random_children_loses_nothing(amqp_project: Any) -> None:
    project = amqp_project()
    rng = random.Random(11)
    ids = project.publish_many("work", [(rng.randint(1, 50),) for _ in range(3000)])
    worker = project.start_worker("-c", "4")
    killed = H.kill_children_at_random(project, worker, ids, rng)
    states = project.states(ids)
    starts = project.runs_by_task("start")
    never_ran = [tid for tid in ids if starts[tid] == 0]
    print(f"\nkill -9 chaos on RabbitMQ: tasks={len(ids)} kills={len(killed)} "
          f"succeeded={states['SUCCESS']} duplicated_exec="
          f"{sum(1 for n in starts.values() if n > 1)}")
    assert len(killed) >= 3, "the test must actually kill children"
    assert states["SUCCESS"] == len(ids), states
    assert not never_ran
    duplicates = {tid for tid, n in starts.items() if n > 1}
    assert duplicates <= H.held_at_kill(project, killed), "ran twice, held by no killed child"
    assert not project.app.broker.dead_letters(limit=10)


@pytest.mark.timeout(180)
def test_poison_pill_dead_lettered_after_three_deliveries(amqp_project: Any) -> None:
    project = amqp_project()
    H.poison_pill_dead_lettered(project, normal=200, wait=60)
    assert project.app.broker.purge_dead_letters() == 1
    assert project.app.broker.dead_letters() == []


@pytest.mark.timeout(120)
def test_task_longer_than_the_lease_runs_once(amqp_project: Any) -> None:
    """Leases on RabbitMQ last while the receiving connection lives, not lease_seconds."""
    project = amqp_project(worker_lease_seconds=2, worker_heartbeat_interval=0.5)
    task_id = project.publish_many("long", [(8,)])[0]
    project.start_worker("-c", "2", name="w1")
    project.start_worker("-c", "2", name="w2")
    H.wait_until(lambda: (m := project.meta(task_id)) and m["status"] == "SUCCESS", 60,
                 interval=0.5, what="the 8 s task")
    assert project.runs_by_task("start")[task_id] == 1
    assert project.runs_by_task("done")[task_id] == 1


@pytest.mark.timeout(180)
def test_hard_time_limit_follows_acks_on_timeout(amqp_project: Any) -> None:
    """On RabbitMQ the supervisor cannot settle a killed child's message (the lease is the
    child's connection's): it comes back by itself, and its next receiver settles it as
    the supervisor would have: acknowledged (``acks_on_timeout`` true) or run again and,
    at ``worker_max_redeliveries``, dead-lettered as ``time_limit``."""
    project = amqp_project(worker_max_redeliveries=2)
    acked, requeued = (project.publish_many(name, [(30,)])[0]
                       for name in ("hard", "hard_requeued"))
    project.start_worker("-c", "2")
    [letter] = H.wait_until(lambda: project.app.broker.dead_letters(), 90,
                            what="the timed-out task's dead letter")
    assert letter.message.task_id == requeued
    assert letter.reason == "time_limit: exceeded its time limit in 2 runs " \
                            "(acks_on_timeout=False)"
    H.wait_until(lambda: (st := project.app.broker.stats("celery")).ready == 0
                 and st.leased == 0, 60, what="every message settled")
    starts = project.runs_by_task("start")
    assert starts[acked] == 1 and starts[requeued] == 2, starts
    for task_id in (acked, requeued):
        assert project.meta(task_id)["result"]["exc_type"] == "TimeLimitExceeded"
