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
  worker loss recorded is not a completed run) nor ``TimeLimitExceeded`` of a task that
  requeues timed-out runs (``acks_on_timeout`` false, :mod:`.timeouts`: the run is due
  again); ``PENDING``, ``STARTED``, ``RETRY`` run, ``REVOKED`` is the revocation rule's;
* the message carries no follow-up (``link``/``link_error`` callbacks, chain, chord):
  those are sent after the outcome is stored, so a run that died in between would
  lose them;
* the task class has no ``on_success``/``on_failure``/``after_return`` hook (they run
  after the store too);
* the outcome is stored at all: results enabled, not ``ignore_result``, and a store
  that keeps outcomes (``rpc://`` sends them to the caller and cannot tell: there a
  redelivered message runs again, as in Celery). A store that cannot be read runs it.

The outcomes are read in batches, none for first deliveries: the first redelivered
message of a received batch reads, with one ``get_many`` where the store has it, the
outcomes of every redelivered message held after it (the consumer holds a batch, then
prepares its messages in order), and the next ones find theirs already read. An outcome
read ahead can only be older than one read at its own turn: a message whose outcome was
not stored yet runs (as it would have), a final outcome stays final. A task id reused
for a new message that is redelivered also finds the old outcome: it is not run.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .. import states
from ..app.task import Task
from ..brokers import base
from .timeouts import stored_timeout, timeout_flag

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
        #: delivery tag -> the stored outcome read ahead for it (None: nothing stored)
        self._ahead: dict[str, dict[str, Any] | None] = {}

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
            meta = self._stored(backend, delivery, str(request.id))
        except Exception as exc:  # cannot tell: run it (at least once)
            logger.debug("Could not read the stored outcome of %s: %s", request.id, exc)
            return False
        state = meta.get("status") if meta else None
        if state not in (states.SUCCESS, states.FAILURE) or (
                state == states.FAILURE and _exc_type(meta) == LOST) or (
                stored_timeout(meta) and timeout_flag(task)):
            return False
        logger.info("Task %s[%s] redelivered, its outcome %s is already stored: "
                    "acknowledged without running it again", request.task, request.id, state)
        self.broker.ack([delivery])
        self.keeper.drop(delivery)
        self.count += 1
        return True

    def _stored(self, backend: Any, delivery: base.Delivery, task_id: str
                ) -> dict[str, Any] | None:
        """The stored outcome of ``delivery``'s task: read ahead, else read now together
        with those of the redelivered messages held after it."""
        if delivery.tag in self._ahead:
            return self._ahead.pop(delivery.tag)
        held = self.keeper.held()
        tags = [d.tag for d in held]
        after = held[tags.index(delivery.tag) + 1:] if delivery.tag in tags else []
        ahead = {d.tag: d.message.task_id for d in after
                 if (d.redelivered or d.lost_count) and d.message.task_id}
        get_many = getattr(backend, "get_many", None)
        if not ahead or get_many is None:
            meta: dict[str, Any] | None = backend.get(task_id)
            return meta
        found = get_many([task_id, *ahead.values()])
        self._ahead = {tag: found.get(tid) for tag, tid in ahead.items()}
        return found.get(task_id)


def _exc_type(meta: dict[str, object] | None) -> object:
    result = meta.get("result") if meta else None
    return result.get("exc_type") if isinstance(result, dict) else None
