"""Remote control: revocation stored in the result store, so it survives worker restarts.

``revoke`` records ``REVOKED`` for the task id (Celery 5.6.2+ does the same
write); every worker checks it before running a message, so a revoked task
never runs even if no worker was online when it was revoked. With
``terminate=True`` the meta also carries the signal (``"terminate":
"SIGTERM"``): workers poll the revocations of the tasks they run and stop
them (see :mod:`celeriac.worker.revocation`). The result store refuses any
later write over ``REVOKED``, so a task that still finishes cannot overwrite it.
"""

from __future__ import annotations

import signal as signal_module
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .. import states
from ..exceptions import ImproperlyConfigured, TaskRevokedError
from ..results.meta import store_result

if TYPE_CHECKING:
    from .base import Celery


def signal_number(value: Any) -> int:
    """A signal given as a name (``"SIGKILL"``, ``"KILL"``), a number or None (SIGTERM)."""
    if value is None or value == "":
        return int(signal_module.SIGTERM)
    if isinstance(value, int):
        try:
            return int(signal_module.Signals(value))
        except ValueError:
            raise ValueError(f"unknown signal {value!r}") from None
    name = str(value).upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return int(signal_module.Signals[name])
    except KeyError:
        raise ValueError(f"unknown signal {value!r}") from None


class Control:
    """``app.control``."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def revoke(self, task_id: str | Iterable[str], destination: Any = None,
               terminate: bool = False, signal: Any = None, **kwargs: Any) -> None:
        """Revoke tasks: never run them, and with ``terminate`` stop them if they run
        (``signal``: a name or number, default SIGTERM)."""
        if self.app.backend is None:
            raise ImproperlyConfigured("revoke() needs a result backend to record revocations")
        extra = None
        if terminate:
            extra = {"terminate": signal_module.Signals(signal_number(signal)).name}
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        for tid in ids:
            store_result(self.app, tid, TaskRevokedError("revoked"), states.REVOKED,
                         extra=extra)

    def purge(self) -> int:
        return self.app.broker.purge(self.app.conf.task_default_queue)
