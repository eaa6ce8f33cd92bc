"""Follow-up steps that could not be sent after a task body ran: recorded, dead-lettered alone.

A link, the next chain step, an error callback or the chord join runs after
the task's result is stored. If one of them fails (a publish error, an option
the producer side cannot use), the body must not run again for it: the task's
message is acknowledged as usual and the step that could not be sent goes to
the dead-letter store on its own, with the reason ``followup_failed: <what> of
<task>[<id>] ...``. ``celeriac deadletters retry`` then sends just that step.

The dead letter is the step's own message (built as a publish would build it,
with the task's result as first argument) when that can be built; otherwise
(a composite step, a chord join, error callbacks) it is a copy of the task's
message, whose reason says so: retrying that copy runs the task again.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from ..app.publish import build_message
from ..brokers.base import FOLLOWUP_FAILED, Delivery
from ..canvas.signature import maybe_signature
from ..messages import Message

if TYPE_CHECKING:
    from ..app.base import Celery
    from ..app.request import Request

logger = logging.getLogger("celeriac.worker")

COMPOSITE = frozenset({"chain", "group", "chord"})


class FollowupRecorder:
    """The tracer's ``followup_failed`` for one job."""

    def __init__(self, app: Celery, delivery: Delivery, request: Request) -> None:
        self.app, self.delivery, self.request = app, delivery, request

    def __call__(self, what: str, step: Any, exc: Exception, args: tuple[Any, ...] = (),
                 options: dict[str, Any] | None = None) -> None:
        req = self.request
        logger.error("Task %s[%s] ran, but its %s could not be sent: %r", req.task, req.id,
                     what, exc)
        message, queue, own = self._message(what, step, args, options or {})
        reason = (f"{FOLLOWUP_FAILED}: {what} of {req.task}[{req.id}] could not be sent: "
                  f"{exc!r:.300}")
        if not own:
            reason += " (stored: a copy of the task's message; retrying runs the task again)"
        try:
            dead_id = self.app.broker.dead_letter_message(message, queue, reason)
        except Exception:
            logger.exception("Could not dead-letter the %s of %s[%s]", what, req.task, req.id)
            return
        logger.error("The %s of %s[%s] is dead letter %s", what, req.task, req.id, dead_id)

    def _message(self, what: str, step: Any, args: tuple[Any, ...],
                 options: dict[str, Any]) -> tuple[Message, str, bool]:
        """(message, queue, is the step's own message)."""
        if what in ("link", "chain"):
            try:
                sig = maybe_signature(step, app=self.app, clone=True)
                if sig is not None and sig.subtask_type not in COMPOSITE:
                    call_args = list(sig.args) if sig.immutable else [*args, *sig.args]
                    opts = {**sig.options, **options}
                    task_id = opts.pop("task_id", None) or str(uuid.uuid4())
                    message, queue, _, _ = build_message(self.app, sig.task, call_args,
                                                         dict(sig.kwargs), task_id, opts)
                    return message, queue, True
            except Exception:
                logger.debug("Could not build the %s's message", what, exc_info=True)
        return self.delivery.message, self.delivery.queue, False
