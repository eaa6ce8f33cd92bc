"""Faults on real worker processes (SQLite and Redis): the loops and losses of issues 9 and 21.

* A task holding the GIL for three leases runs exactly once on every pool, with two
  workers competing (leases are renewed by a process that runs no task).
* Each malformed message from the issue (``embed.callbacks: [1]``, ``embed.chain:
  ["x"]``, ``properties.priority: "high"``, ``headers.timelimit: ["x", null]``, a
  list as content type, ``delivery_info: "x"``) is dead-lettered on its first
  delivery, never runs and never loops, while valid tasks flow.
* ``revoke(terminate=True)`` stops a running prefork task; its state stays REVOKED.
* A SIGSTOPped threads worker is fenced like a stopped prefork child.
* Idle children killed from outside are replaced at once (no crash back-off).
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest
import workerharness as H

from celeriac.messages import Message

POOLS = {"prefork": ("-P", "prefork", "-c", "2"), "threads": ("-P", "threads", "-c", "2"),
         "solo": ("-P", "solo"), "asyncio": ("-P", "asyncio", "-c", "2")}


def settled(project: Any) -> bool:
    stats = project.app.broker.stats(project.app.conf.task_default_queue)
    return stats.ready == 0 and stats.leased == 0 and stats.delayed == 0


@pytest.mark.timeout(180)
@pytest.mark.parametrize("pool", list(POOLS))
def test_a_task_holding_the_gil_for_three_leases_runs_once(project_factory: Any,
                                                           pool: str) -> None:
    project = project_factory(worker_lease_seconds=2, worker_heartbeat_interval=0.5)
    project.start_worker(*POOLS[pool], name="w1")
    project.start_worker(*POOLS[pool], name="w2")
    time.sleep(2.0)  # both up and polling
    [task_id] = project.publish_many("hold_gil", [(6,)])
    meta = H.wait_until(lambda: (m := project.meta(task_id)) and m["status"] == "SUCCESS"
                        and m, 90, interval=0.2, what="the GIL-holding task")
    time.sleep(3.0)  # one more lease and a half: a lapsed lease would show up now
    assert meta["result"] == 6
    assert project.runs_by_task("start")[task_id] == 1
    assert project.runs_by_task("done")[task_id] == 1
    assert project.app.broker.dead_letters() == []
    assert settled(project)


def malformed(project: Any) -> dict[str, Message]:
    """The messages of issue 21, as a producer (or a hand) could push them."""
    name = f"{project.module}.work"

    def message(n: int, embed: dict[str, Any] | None = None, headers: Any = None,
                properties: Any = None, content_type: Any = "application/json") -> Message:
        task_id = f"bad-{n}"
        body = json.dumps([[1], {}, {"callbacks": None, "errbacks": None, "chain": None,
                                     "chord": None, **(embed or {})}]).encode()
        return Message({"lang": "py", "task": name, "id": task_id, "retries": 0,
                        "timelimit": [None, None], **(headers or {})},
                       {"correlation_id": task_id, "delivery_mode": 2,
                        "delivery_info": {"exchange": "", "routing_key": "celery"},
                        "priority": 0, **(properties or {})}, body, content_type)

    return {
        "embed.callbacks[0]": message(1, embed={"callbacks": [1]}),
        "embed.chain[0]": message(2, embed={"chain": ["x"]}),
        "properties.priority": message(3, properties={"priority": "high"}),
        "headers.timelimit": message(4, headers={"timelimit": ["x", None]}),
        "content-type": message(5, content_type=["application/json"]),
        "properties.delivery_info": message(6, properties={"delivery_info": "x"}),
    }


@pytest.mark.timeout(180)
def test_malformed_messages_are_dead_lettered_on_first_delivery(project_factory: Any) -> None:
    project = project_factory()
    bad = malformed(project)
    broker = project.app.broker
    for message in bad.values():
        broker.publish(message, "celery")
    good = project.publish_many("work", [(1,)] * 20)
    worker = project.start_worker("-c", "2", name="w1")
    H.wait_until(lambda: project.states(good)["SUCCESS"] == len(good), 90, what="good tasks")
    H.wait_until(lambda: len(broker.dead_letters()) == len(bad), 30, what="dead letters")
    time.sleep(2.0)  # a loop would redeliver them, run them, or grow the log now
    letters = {letter.message.task_id: letter for letter in broker.dead_letters()}
    assert len(letters) == len(bad)
    for field, message in bad.items():
        letter = letters[message.task_id]
        assert letter.reason.startswith(f"decode_error: {field}"), letter.reason
        assert letter.delivery_count == 1
    runs = project.runs_by_task("start")
    assert not any(runs[message.task_id] for message in bad.values())
    assert settled(project)
    assert worker.poll() is None
    assert len(project.log_text("w1")) < 100_000


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_revoke_terminate_stops_a_running_prefork_task(project_factory: Any, sig: str) -> None:
    project = project_factory()
    worker = project.start_worker("-c", "1", name="w1")
    [task_id] = project.publish_many("long", [(60,)])
    H.wait_until(lambda: project.runs_by_task("start")[task_id] == 1, 30, what="the start")
    [child] = H.child_pids(worker.pid)
    project.app.control.revoke(task_id, terminate=True, signal=sig)
    H.wait_until(lambda: settled(project), 30, what="the terminated task to be settled")
    new = H.wait_until(lambda: [p for p in H.child_pids(worker.pid) if p != child], 30,
                       what="a replacement child")
    assert child not in H.child_pids(worker.pid) and new
    assert project.meta(task_id)["status"] == "REVOKED"
    assert project.runs_by_task("done")[task_id] == 0
    [after] = project.publish_many("work", [(1,)])
    H.wait_until(lambda: project.states([after])["SUCCESS"] == 1, 30, what="the next task")
    time.sleep(1.0)
    assert project.runs_by_task("start")[task_id] == 1  # never redelivered
    assert "terminated" in project.log_text("w1").lower()


@pytest.mark.timeout(120)
def test_sigstopped_threads_worker_is_fenced(project_factory: Any) -> None:
    project = project_factory(worker_lease_seconds=2, worker_heartbeat_interval=0.5)
    [task_id] = project.publish_many("long", [(3,)])
    first = project.start_worker("-P", "threads", "-c", "1", name="w1")
    H.wait_until(lambda: project.runs_by_task("start")[task_id] == 1, 30, what="the first run")
    os.kill(first.pid, signal.SIGSTOP)  # the worker only: its renewer process sees it stopped
    try:
        project.start_worker("-P", "threads", "-c", "1", name="w2")
        H.wait_until(lambda: (m := project.meta(task_id)) and m["status"] == "SUCCESS", 30,
                     what="the second worker's run")
        winner = project.meta(task_id)["result"]
    finally:
        os.kill(first.pid, signal.SIGCONT)
    H.wait_until(lambda: project.runs_by_task("done")[task_id] == 2, 30,
                 what="the woken worker to finish its body")
    time.sleep(1.0)
    assert project.meta(task_id)["result"] == winner
    assert "lease lost" in project.log_text("w1").lower()
    assert settled(project)


@pytest.mark.timeout(120)
def test_idle_children_killed_from_outside_are_replaced_at_once(project_factory: Any) -> None:
    project = project_factory()
    worker = project.start_worker("-c", "2", name="w1")
    children = H.wait_until(lambda: len(pids := H.child_pids(worker.pid)) == 2 and pids, 30,
                            what="two children")
    seen = set(children)
    for _ in range(5):  # each time the newest child, killed right after it started
        victim = max(H.child_pids(worker.pid))
        os.kill(victim, signal.SIGKILL)
        started = time.monotonic()
        fresh = H.wait_until(
            lambda known=frozenset(seen): len(p := H.child_pids(worker.pid)) == 2
            and set(p) - known and p, 10, interval=0.02, what="a replacement child")
        assert time.monotonic() - started < 2.0
        seen |= set(fresh)
    assert "right after starting" not in project.log_text("w1")
    [task_id] = project.publish_many("work", [(1,)])
    H.wait_until(lambda: project.states([task_id])["SUCCESS"] == 1, 30, what="a task")
