"""The prefork supervisor's view of its children, and what it does when one ends.

:class:`Child` is one child process as the supervisor tracks it. When a child
ends, what happens to the task it ran depends on why:

* killed for its hard time limit (:func:`record_time_limit`): ``FAILURE`` /
  ``TimeLimitExceeded`` (error callbacks and chord counted), its message
  acknowledged: it ran to its limit and is not redelivered;
* killed by ``revoke(terminate=True)`` (:func:`settle_terminated`): its
  message acknowledged, the task stays ``REVOKED``;
* died on its own (crash, ``os._exit``, kill -9, OOM killer): its leases are
  expired at once so its messages are redelivered (counted as lost), and a
  task acknowledged before it ran (``acks_late=False``) is recorded as
  ``WorkerLostError`` (:func:`record_lost`).

In every case what else the child held (prefetched messages) is redelivered
now. :func:`crashed` tells a crash (an error exit, a fatal signal of its own)
from a kill from outside, which never triggers the restart back-off.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from .. import states
from ..brokers.base import Delivery
from ..canvas.callbacks import fail_outside_tracer
from ..exceptions import TimeLimitExceeded, WorkerLostError
from ..results.meta import store_result
from .child import Slot

if TYPE_CHECKING:
    from ..app.base import Celery

logger = logging.getLogger("celeriac.worker")

#: signals by which a process crashes by itself (others come from outside: kill, OOM killer)
CRASH_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE,
                           signal.SIGILL, signal.SIGSYS})


@dataclass
class Child:
    """The supervisor's view of one child process."""

    process: Any
    slot: Slot
    conn: Connection
    owner: str
    hard: tuple[str, str, Delivery] | None = None   # (task id, name, delivery) of a limited task
    killed_for_limit: bool = False
    terminated: tuple[str, int] | None = None       # (task id, signal) of revoke(terminate)
    retiring: bool = False           # asked to stop: do not replace (autoscale down)
    started_at: float = 0.0
    job_info: dict[str, Any] | None = None   # what it runs (remote control's ``active``)


def crashed(code: int | None) -> bool:
    """True for an exit by itself with an error (not a clean exit, not a kill)."""
    if code is None or code == 0:
        return False
    return code > 0 or -code in CRASH_SIGNALS


def kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def describe(code: int | None) -> str:
    if code is None:
        return "unknown status"
    if code < 0:
        try:
            return f"signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"signal {-code}"
    return f"exitcode {code}"


def record_lost(app: Celery, task_id: str, code: int | None) -> None:
    exc = WorkerLostError(f"Worker exited prematurely: {describe(code)} Job: {task_id}.")
    try:
        store_result(app, task_id, exc, states.FAILURE)
    except Exception:
        logger.exception("Could not store WorkerLostError for %s", task_id)


def record_time_limit(app: Celery, child: Child) -> None:
    assert child.hard is not None
    task_id, _name, delivery = child.hard
    hard = child.slot.hard
    try:
        fail_outside_tracer(app, delivery.message, TimeLimitExceeded(hard))
    except Exception:
        logger.exception("Could not record TimeLimitExceeded for %s", task_id)
    broker = app.broker
    broker.ack([delivery])  # it ran to its limit: not redelivered
    others = broker.expire_owner(child.owner)
    if others:
        logger.warning("%d prefetched message(s) of the killed child made available", others)


def settle_terminated(app: Celery, child: Child, held: list[Delivery],
                      code: int | None) -> None:
    """A child killed by revoke(terminate): acknowledge the revoked task's message (it
    stays REVOKED, never runs again); what else the child held is redelivered now."""
    assert child.terminated is not None
    task_id, signum = child.terminated
    broker = app.broker
    mine = [d for d in held if d.message.task_id == task_id]
    if mine:
        broker.ack(mine)
    others = broker.expire_owner(child.owner)
    logger.warning("Task %s terminated (%s); child %d exited with %s%s", task_id,
                   signal.Signals(signum).name, child.process.pid, describe(code),
                   f"; {others} prefetched message(s) made available" if others else "")


def app_ref(app: Any) -> str:
    """``module:attr`` under which ``app`` can be imported (for spawned children)."""
    for name, module in list(sys.modules.items()):
        if name == "__main__" or module is None or name.split(".")[0] == "celeriac":
            continue
        for attr, value in list(vars(module).items()):
            if value is app:
                return f"{name}:{attr}"
    raise RuntimeError("worker_pool_start_method='spawn' needs the app importable from a "
                       "module (define it at module level)")
