"""Lease renewal that does not depend on the task's GIL (issue 9, point 1).

The renewer renews the leases of running owners only (a stopped or dead owner's
leases lapse: fencing), and the renewer process keeps a lease alive while the
owner's GIL is held by C code for longer than the lease.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from celeriac import Celery
from celeriac.messages import task_message
from celeriac.worker.leases import LeaseKeeper, delivery_of, lease_of
from celeriac.worker.renewer import GONE, RUNNING, STOPPED, ProcessRenewal, Renewer, process_state


def hold_gil(seconds: int) -> None:
    """libc ``sleep`` called through PyDLL: the GIL stays held the whole time."""
    ctypes.PyDLL(None).sleep(seconds)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(5)


def test_process_state_tells_running_stopped_and_gone(sleeper: subprocess.Popen[bytes]) -> None:
    assert process_state(sleeper.pid) == RUNNING
    sleeper.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while process_state(sleeper.pid) != STOPPED:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    sleeper.send_signal(signal.SIGCONT)
    while process_state(sleeper.pid) != RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    sleeper.kill()
    sleeper.wait(5)
    assert process_state(sleeper.pid) == GONE


def test_renewer_skips_stopped_owners_and_forgets_lost_leases(
        sleeper: subprocess.Popen[bytes]) -> None:
    app = Celery("renewer", broker="memory://", set_as_current=False)
    app.conf.worker_lease_seconds = 0.5
    broker = app.broker
    for n in range(3):
        broker.publish(task_message("t", f"id-{n}", (), {}), "celery")
    mine, theirs, lost = broker.receive(["celery"], owner="w", limit=3, timeout=1)
    renewer = Renewer(broker, interval=0.1)
    renewer.hold(os.getpid(), [lease_of(mine), lease_of(lost)])
    renewer.hold(sleeper.pid, [lease_of(theirs)])
    assert broker.ack([lost]) == 1  # settled behind the renewer's back
    sleeper.send_signal(signal.SIGSTOP)
    time.sleep(0.05)
    for _ in range(8):  # 0.8 s > the 0.5 s lease
        renewer.renew()
        time.sleep(0.1)
    assert list(renewer.held[os.getpid()]) == [mine.tag]  # the lost one was forgotten
    assert broker.renew([mine]) == [True]
    [again] = broker.receive(["celery"], owner="other", timeout=1)
    assert again.message.task_id == "id-1" and again.lost_count == 1  # the stopped owner's
    assert renewer.forget(sleeper.pid) == [delivery_of(lease_of(theirs))]


def test_renewer_process_keeps_a_lease_while_the_gil_is_held(tmp_path: object) -> None:
    app = Celery("gil", broker=f"sqlite:///{tmp_path}/b.sqlite3", set_as_current=False)
    app.conf.worker_lease_seconds = 1.0
    broker = app.broker
    broker.publish(task_message("t", "id-1", (), {}), "celery")
    [delivery] = broker.receive(["celery"], owner="me", timeout=1)
    keeper = LeaseKeeper(broker, 0.2, ProcessRenewal(app, 0.2))
    keeper.start()
    try:
        keeper.hold([delivery])
        keeper.sync()  # as the consumer does before it starts a job
        hold_gil(3)  # three leases long: no thread of this process runs meanwhile
        assert broker.receive(["celery"], owner="other", timeout=0) == []
        assert keeper.still_owner(delivery)
        keeper.drop(delivery)
        assert broker.ack([delivery]) == 1
    finally:
        keeper.stop()
    assert keeper.renewal.proc is None  # type: ignore[attr-defined]
