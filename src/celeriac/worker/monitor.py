"""What a job runner tells its owner (a consumer, a prefork child) and how limits are armed.

:class:`Monitor` is the hook a supervisor or consumer subclasses to learn what runs;
:class:`Limits` is the protocol of the time-limit armer (see :mod:`.limits`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .job import Job


class Limits(Protocol):
    """How time limits are armed around a task body (see :mod:`.limits`)."""

    def arm(self, soft: float | None, hard: float | None) -> list[int]: ...

    def disarm(self, tokens: list[int]) -> None: ...


class Monitor:
    """Hooks telling a supervisor what runs; the default does nothing."""

    def task_started(self, job: Job, hard: float | None) -> None:
        """A task body is about to run."""

    def body_ended(self, job: Job) -> None:
        """The body returned or raised; its outcome is stored next (which may wait for
        the broker during an outage: the hard time limit no longer applies)."""

    def task_finished(self, job: Job) -> None:
        """The body returned or raised (the message is settled next)."""

    def received(self, count: int) -> None:
        """A receive call returned ``count`` messages."""

    def flush(self) -> None:
        """Send what was batched for the supervisor now (a task runs past a tick)."""
