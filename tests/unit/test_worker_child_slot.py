"""A prefork child tells its supervisor what runs without a pipe write per task.

The running task's description (``inspect active``) goes in the child's shared
slot; the starts (counted by name, time to start by queue) go over the pipe in
one frame when the child's buffer runs empty, when a receive returns, or when
the watcher ticks during a long task. Nothing is lost on the way.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from types import SimpleNamespace
from typing import Any

from celeriac.brokers.base import Delivery
from celeriac.messages import task_message
from celeriac.worker.child import ChildMonitor, ChildSpec, Slot, read_job, write_job
from celeriac.worker.leases import SupervisorRenewal
from celeriac.worker.prefetch import PrefetchRule


def _job(n: int, args: tuple[Any, ...] = ("cnt",)) -> Any:
    message = task_message("bench.incr", f"task-{n}", args)
    delivery = Delivery(message=message, queue="celery", tag=str(n), token=f"t{n}", owner="o")
    return SimpleNamespace(id=f"task-{n}", name="bench.incr", delivery=delivery,
                           task=SimpleNamespace(acks_late=True), acks_late=True,
                           time_to_start=0.25,
                           request=SimpleNamespace(args=list(args), kwargs={}))


def _monitor() -> tuple[ChildMonitor, Slot, Any, Any]:
    reader, writer = multiprocessing.get_context("fork").Pipe(duplex=False)
    slot = Slot()
    monitor = ChildMonitor(slot, SupervisorRenewal(writer), ChildSpec(
        owner="o", hostname="w@h", queues=["celery"]))
    consumer = SimpleNamespace(buffer=deque(), prefetch=PrefetchRule(1, budget=0.1),
                               runner=SimpleNamespace(done_before=SimpleNamespace(count=0)))
    monitor.consumer = consumer  # type: ignore[assignment]
    return monitor, slot, reader, consumer


def _frames(reader: Any) -> list[Any]:
    out = []
    while reader.poll(0):
        out.append(reader.recv())
    return out


def test_a_description_round_trips_through_the_slot() -> None:
    slot = Slot()
    assert read_job(slot) is None
    info = {"id": "a", "name": "t", "args": [1, "x"], "kwargs": {"k": None}}
    assert write_job(slot, info)
    assert read_job(slot) == info
    assert slot.job_seq % 2 == 0
    assert not write_job(slot, {"id": "b", "args": ["x" * 10_000]})  # too large: the pipe
    assert read_job(slot) is None


def test_starts_go_in_one_frame_when_the_buffer_runs_empty() -> None:
    monitor, slot, reader, consumer = _monitor()
    consumer.buffer.extend([object()] * 3)
    for n in range(3):
        consumer.buffer.popleft()
        monitor.task_started(_job(n), None)
        info = read_job(slot)
        assert info is not None and info["id"] == f"task-{n}" and info["args"] == ["cnt"]
        assert slot.task_id == f"task-{n}".encode()
        frames = _frames(reader)
        if n < 2:
            assert frames == []  # more jobs held: the next round trip is not now
    assert frames == [("started", [("bench.incr", "celery", f"task-{n}", 0.25)
                                   for n in range(3)])]


def test_a_long_task_in_a_batch_is_told_by_the_watcher_or_the_next_receive() -> None:
    monitor, _, reader, consumer = _monitor()
    consumer.buffer.extend([object()] * 2)
    monitor.task_started(_job(0), None)
    assert _frames(reader) == []
    monitor.flush()  # the consumer's watcher, a tick into the task
    assert [f[0] for f in _frames(reader)] == ["started"]
    monitor.flush()
    assert _frames(reader) == []  # nothing twice
    monitor.task_started(_job(1), None)
    monitor.received(0)
    assert [s[2] for f in _frames(reader) for s in f[1]] == ["task-1"]


def test_a_description_too_large_for_the_slot_goes_over_the_pipe() -> None:
    monitor, slot, reader, _ = _monitor()
    monitor.task_started(_job(0, ("x" * 10_000,)), None)
    frames = _frames(reader)
    assert [f[0] for f in frames] == ["job", "started"]
    assert frames[0][1]["id"] == "task-0" and read_job(slot) is None
