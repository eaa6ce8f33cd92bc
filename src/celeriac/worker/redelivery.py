"""Redelivered messages whose task already ended: acknowledged without running the body.

A message comes back although its run finished when the acknowledgement never took
effect: on RabbitMQ an ack belongs to the connection that received the message, so a
node restart requeues every task that ended while it was down; on any broker a worker
can die, or its lease lapse, between storing a task's outcome and acknowledging its
message. :class:`DoneBefore` checks such a delivery before it runs: when the broker
marks it as delivered before (``redelivered`` or a lost count) and the result store
already holds the task's final outcome, the message is acknowledged, the body is not
run again, an INFO line names the task and the stored state, and ``inspect stats``
counts it (``prefetch.already_done``).

At least once is kept; the body runs again (as before) unless every step of the
earlier run after the body is known to be done:

* the stored state is ``SUCCESS``, or ``FAILURE`` that is not ``WorkerLostError`` (a
  worker loss recorded is not a completed run); ``PENDING``, ``STARTED``, ``RETRY``
  run, ``REVOKED`` is the revocation rule's;
* the message carries no follow-up (``link``/``link_error`` callbacks, chain, chord):
  those are sent after the outcome is stored, so a run that died in between would
  lose them;
* the task class has no ``on_success``/``on_failure``/``after_return`` hook (they run
  after the store too);
* the outcome is stored at all: results enabled, not ``ignore_result``, and a store
  that keeps outcomes (``rpc://`` sends them to the caller and cannot tell: there a
  redelivered message runs again, as in Celery). A store that cannot be read runs it.

The read is one ``get`` per redelivered message, none for first deliveries. A task id
reused for a new message that is redelivered also finds the old outcome: it is not run.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .. import states
from ..app.task import Task
from ..brokers import base

if TYPE_CHECKING:
    from ..app.base import Celery
    from ..app.request import Request
    from .leases import LeaseKeeper

logger = logging.getLogger("celeriac.worker")

#: a FAILURE with this exception type records a lost worker, not a completed run
LOST = "WorkerLostError"
_HOOKS = ("on_success", "on_failure", "after_return")


class DoneBefore:
    """The check of one job runner (see the module docstring)."""

    def __init__(self, app: Celery, keeper: LeaseKeeper) -> None:
        self.app, self.broker, self.keeper = app, app.broker, keeper
        #: redelivered messages acknowledged without running (``inspect stats``)
        self.count = 0

    def settle(self, delivery: base.Delivery, request: Request, task: Task) -> bool:
        """True when ``delivery`` was acknowledged because its outcome is stored."""
        if not (delivery.redelivered or delivery.lost_count):
            return False
        backend = self.app.backend
        if (backend is None or getattr(backend, "wants_reply_to", False) or task.ignore_result
                or request.ignore_result or request.callbacks or request.errbacks
                or request.chain or request.chord
                or any(getattr(type(task), h) is not getattr(Task, h) for h in _HOOKS)):
            return False
        try:
            meta = backend.get(str(request.id))
        except Exception as exc:  # cannot tell: run it (at least once)
            logger.debug("Could not read the stored outcome of %s: %s", request.id, exc)
            return False
        state = meta.get("status") if meta else None
        if state not in (states.SUCCESS, states.FAILURE) or (
                state == states.FAILURE and _exc_type(meta) == LOST):
            return False
        logger.info("Task %s[%s] redelivered, its outcome %s is already stored: "
                    "acknowledged without running it again", request.task, request.id, state)
        self.broker.ack([delivery])
        self.keeper.drop(delivery)
        self.count += 1
        return True


def _exc_type(meta: dict[str, object] | None) -> object:
    result = meta.get("result") if meta else None
    return result.get("exc_type") if isinstance(result, dict) else None
