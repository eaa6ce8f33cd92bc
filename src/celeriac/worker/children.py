"""The prefork supervisor's view of its children, and what it does when one ends.

:class:`Child` is one child process as the supervisor tracks it. When a child
ends, what happens to the task it ran depends on why:

* killed for its hard time limit (:func:`record_time_limit`): ``FAILURE`` /
  ``TimeLimitExceeded`` (error callbacks and chord counted), then its message is
  acknowledged (it ran to its limit), or, with ``acks_on_timeout`` false, requeued up
  to the redelivery limit (:mod:`.timeouts`: as under every other pool);
* killed by ``revoke(terminate=True)`` (:func:`settle_terminated`): its
  message acknowledged, the task stays ``REVOKED``;
* died on its own (crash, ``os._exit``, kill -9, OOM killer): its leases are
  expired at once so its messages are redelivered (counted as lost), and a
  task acknowledged before it ran (``acks_late=False``) is recorded as
  ``WorkerLostError``, or retried with ``retry_on_worker_lost`` (:func:`record_lost`).

In every case what else the child held (prefetched messages) is redelivered
now. Each broker step goes through the supervisor's
:class:`~celeriac.worker.outage.Outbox`: during an outage it is taken when the
server is back, in order. :func:`crashed` tells a crash (an error exit, a fatal signal of its own)
from a kill from outside, which never triggers the restart back-off.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from .. import signals, states
from ..app.context import Context
from ..app.request import parse_request
from ..brokers.base import Delivery
from ..canvas.callbacks import fail_outside_tracer
from ..exceptions import TimeLimitExceeded, WorkerLostError
from ..results.meta import store_result
from ..security.setup import readable
from .child import Slot
from .lost import LostRule
from .outage import Outbox
from .timeouts import requeue_timed_out, timeout_flag

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


#: bytes a child's pipe to the supervisor holds before the child's send blocks
PIPE_BYTES = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux


def child_pipe(mp: Any) -> tuple[Connection, Connection]:
    """The pipe a child tells the supervisor on (reader, writer), widened to
    :data:`PIPE_BYTES` where Linux allows: a drain of tiny tasks sends about 110 bytes
    per task (the leases it holds, the tasks it starts, in a frame per batch), so the
    default 64 KiB fills in a few leases of 65 and blocks the child until the
    supervisor's next tick (up to 100 ms, longer on a loaded machine). The send still
    blocks once the pipe is full (nothing is dropped); only the room before that grows.
    Pages are allocated as used."""
    reader, writer = mp.Pipe(duplex=False)
    try:
        fcntl.fcntl(reader.fileno(), F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:  # above /proc/sys/fs/pipe-max-size or the user's pipe pages: keep 64 KiB
        logger.debug("Could not widen a child's pipe to %d bytes", PIPE_BYTES)
    return reader, writer


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


def expire_owner(app: Celery, owner: str, outbox: Outbox, note: str) -> None:
    """Make ``owner``'s leases lapse now (through ``outbox``: later, during an outage);
    ``note`` is logged with the count (``%d``) when there were any."""
    def step() -> None:
        released = app.broker.expire_owner(owner)
        if released:
            logger.warning(note, released)
    outbox.run(f"expire the leases of {owner}", step)


def record_lost(app: Celery, child: Child, task_id: str, code: int | None,
                outbox: Outbox) -> None:
    """A task acknowledged before it ran (``acks_late=False``) died with its child: it is
    retried with ``retry_on_worker_lost`` while ``max_retries`` allow, as Celery does
    (:meth:`~.lost.LostRule.retry`), else it is ``FAILURE``/``WorkerLostError``."""
    exc = WorkerLostError(f"Worker exited prematurely: {describe(code)} Job: {task_id}.")
    task = app.tasks.get(child.hard[1]) if child.hard and child.hard[0] == task_id else None
    if task is not None and child.hard is not None and task.retry_on_worker_lost:
        delivery = child.hard[2]

        def retry() -> None:
            try:
                request = parse_request(readable(app, delivery.message))
            except Exception:  # it ran, so it was readable; if not, it is lost
                logger.exception("Could not read %s to retry it", task_id)
            else:
                limit = task.max_retries
                if (limit is None or request.retries < limit) and LostRule(app).retry(
                        delivery, request, task):
                    return
            store_result(app, task_id, exc, states.FAILURE)
        outbox.run(f"retry {task_id} (retry_on_worker_lost)", retry)
        return
    outbox.run(f"store WorkerLostError for {task_id}",
               lambda: store_result(app, task_id, exc, states.FAILURE))


def record_time_limit(app: Celery, child: Child, outbox: Outbox) -> None:
    assert child.hard is not None
    task_id, name, delivery = child.hard
    hard, task = child.slot.hard, app.tasks.get(name)
    outbox.run(f"record TimeLimitExceeded for {task_id}", lambda: fail_outside_tracer(
        app, delivery.message, TimeLimitExceeded(hard)))
    if child.slot.acks_early:
        pass  # acknowledged before it ran (acks_late=False)
    elif task is not None and timeout_flag(task):
        limit = int(app.conf.worker_max_redeliveries)
        outbox.run(f"requeue {task_id}",
                   lambda: requeue_timed_out(app.broker, delivery, task, limit))
    else:  # it ran to its limit: not redelivered
        outbox.run(f"acknowledge {task_id}", lambda: app.broker.ack([delivery]))
    expire_owner(app, child.owner, outbox,
                 "%d prefetched message(s) of the killed child made available")


def settle_terminated(app: Celery, child: Child, held: list[Delivery],
                      code: int | None, outbox: Outbox) -> None:
    """A child killed by revoke(terminate): acknowledge the revoked task's message (it
    stays REVOKED, never runs again); what else the child held is redelivered now."""
    assert child.terminated is not None
    task_id, signum = child.terminated
    mine = [d for d in held if d.message.task_id == task_id]
    if mine:
        outbox.run(f"acknowledge {task_id}", lambda: app.broker.ack(mine))
        name = mine[0].message.task_name or ""  # the supervisor holds id and name only
        signals.task_revoked.send(sender=app.tasks.get(name), request=Context(
            id=task_id, task=name, hostname=child.owner.rsplit(":", 1)[0]), terminated=True,
            signum=signum, expired=False)
    logger.warning("Task %s terminated (%s); child %d exited with %s", task_id,
                   signal.Signals(signum).name, child.process.pid, describe(code))
    expire_owner(app, child.owner, outbox, "%d prefetched message(s) of the terminated "
                 "child made available")


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
