"""Forking while another thread of this process holds an SQLite lock.

SQLite keeps the lock state of every open file in the process's memory (one
record per file, shared by all the process's connections to it). A child made by
``fork`` while another thread was inside a write transaction inherits that record
saying "this process holds the write lock"; the thread that held it does not
exist in the child, so no connection the child opens can ever write to that
database ("database is locked" for ever). That is what a prefork worker did when
its ``-B`` beat thread (or its remote-control thread) was committing at the
moment a child was started.

:func:`holding_locks` wraps every write transaction of :mod:`.db`; the fork hooks
registered here make ``os.fork`` wait (up to :data:`FORK_WAIT` seconds) until no
other thread is inside one, and keep new ones from starting until the fork is
done. A transaction of the forking thread itself is not waited for.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger("celeriac.sqlite")

#: seconds a fork waits for other threads' SQLite transactions to end
FORK_WAIT = 10.0


class _Gate:
    def __init__(self, inside: int = 0) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.inside = inside  # threads inside a transaction
        self.forking = False
        self.local = threading.local()

    def depth(self) -> int:
        return int(getattr(self.local, "depth", 0))


_gate = _Gate()


@contextmanager
def holding_locks() -> Iterator[None]:
    """Mark this thread as holding SQLite locks for the duration (re-entrant)."""
    gate = _gate
    depth = gate.depth()
    if depth == 0:
        with gate.cond:
            while gate.forking:
                gate.cond.wait()
            gate.inside += 1
    gate.local.depth = depth + 1
    try:
        yield
    finally:
        gate.local.depth = depth
        if depth == 0:
            with gate.cond:
                gate.inside -= 1
                gate.cond.notify_all()


def _before_fork() -> None:
    gate = _gate
    gate.cond.acquire()
    gate.forking = True
    mine = 1 if gate.depth() else 0
    deadline = time.monotonic() + FORK_WAIT
    while gate.inside > mine:
        left = deadline - time.monotonic()
        if left <= 0:
            logger.warning("fork: another thread still holds an SQLite transaction after "
                           "%.0f s; the new process may find the database locked",
                           FORK_WAIT)
            break
        gate.cond.wait(left)


def _after_fork_in_parent() -> None:
    gate = _gate
    gate.forking = False
    gate.cond.notify_all()
    gate.cond.release()


def _after_fork_in_child() -> None:
    gate = _gate
    # only the forking thread lives on: its own transaction, if any, is the only one.
    # The same gate, reset (a transaction the fork happened in ends on it), with a new
    # lock: the one _before_fork took stays held in the child.
    gate.cond = threading.Condition(threading.Lock())
    gate.forking = False
    gate.inside = 1 if gate.depth() else 0


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)
