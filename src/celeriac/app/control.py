"""Remote control: revocation stored in the result store, so it survives worker restarts.

``revoke`` records ``REVOKED`` for the task id (Celery 5.6.2+ does the same
write); every worker checks it before running a message, so a revoked task
never runs even if no worker was online when it was revoked.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .. import states
from ..exceptions import ImproperlyConfigured, TaskRevokedError
from ..results.meta import store_result

if TYPE_CHECKING:
    from .base import Celery


class Control:
    """``app.control``."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def revoke(self, task_id: str | Iterable[str], destination: Any = None,
               terminate: bool = False, signal: Any = None, **kwargs: Any) -> None:
        if self.app.backend is None:
            raise ImproperlyConfigured("revoke() needs a result backend to record revocations")
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        for tid in ids:
            store_result(self.app, tid, TaskRevokedError("revoked"), states.REVOKED)

    def purge(self) -> int:
        return self.app.broker.purge(self.app.conf.task_default_queue)
