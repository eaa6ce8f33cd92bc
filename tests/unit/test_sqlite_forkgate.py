"""``brokers/sqlite/forkgate.py``: a fork waits for other threads' SQLite write
transactions, and a child forked inside its own thread's transaction can leave it and
start new ones (real ``os.fork``)."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from celeriac.brokers.sqlite.forkgate import holding_locks
from celeryproc import wait_until

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _exit_status(pid: int) -> int:
    """The child's exit status; it is killed (and the test fails) if it hangs."""
    try:
        _, status = wait_until(lambda: (got := os.waitpid(pid, os.WNOHANG))[0] and got, 20,
                               what="the forked child to exit")
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    return os.waitstatus_to_exitcode(status)


def _child_takes_a_transaction() -> None:
    try:
        with holding_locks():
            pass
    finally:
        os._exit(0)


def test_a_child_forked_inside_its_threads_transaction_goes_on() -> None:
    """The child leaves the transaction it was forked in and takes new ones (it hung on
    the lock the parent's fork hook held)."""
    with holding_locks():
        pid = os.fork()
    if pid == 0:  # in the child: it left the block; now another transaction
        _child_takes_a_transaction()
    assert _exit_status(pid) == 0
    with holding_locks():  # the parent goes on too
        pass


def test_a_fork_waits_for_another_threads_transaction() -> None:
    inside, release = threading.Event(), threading.Event()
    left: list[bool] = []

    def writer() -> None:
        with holding_locks():
            inside.set()
            release.wait(10)
            left.append(True)  # still inside the transaction

    thread = threading.Thread(target=writer)
    thread.start()
    assert inside.wait(10)
    threading.Timer(0.2, release.set).start()
    pid = os.fork()  # waits until the writer's transaction ended
    if pid == 0:
        _child_takes_a_transaction()
    assert left == [True]
    assert _exit_status(pid) == 0
    thread.join(10)
