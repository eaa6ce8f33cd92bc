"""Exceptions users raise and catch, with Celery's names and meanings.

``celeriac.exceptions`` mirrors ``celery.exceptions`` so ``except Reject`` and
``raise Ignore()`` work unchanged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


class CeleriacError(Exception):
    """Base class of celeriac's own errors."""


CeleryError = CeleriacError


class ImproperlyConfigured(CeleriacError, ValueError):
    """A setting has a wrong name or value; raised at start-up, naming the setting."""


class OperationalError(CeleriacError):
    """The broker or result store could not be reached after bounded retries."""


class TaskError(CeleriacError):
    """Base class of task-level errors."""


class NotRegistered(KeyError, TaskError):
    """The task name is not registered in this app."""

    def __repr__(self) -> str:
        return f"<NotRegistered: {self.args[0]!r}>" if self.args else "<NotRegistered>"


class AlreadyRegistered(TaskError):
    """A task with this name is already registered."""


class TimeoutError(TaskError):
    """``AsyncResult.get(timeout=...)`` gave up waiting."""


class QueueNotFound(KeyError, TaskError):
    """A task was routed to a queue that is not defined and cannot be created."""


class MaxRetriesExceededError(TaskError):
    """``Task.retry`` was called past ``max_retries``."""

    def __init__(self, *args: Any, task_args: Any = None, task_kwargs: Any = None) -> None:
        super().__init__(*args)
        self.task_args = task_args
        self.task_kwargs = task_kwargs


class TaskRevokedError(TaskError):
    """The task was revoked or expired before it ran."""


class WorkerLostError(TaskError):
    """The worker running the task died."""


class ChordError(TaskError):
    """A task in a chord's header failed."""


class CouldNotAcquireLock(TaskError):
    """A ``serial_task``/``concurrency_limit`` task found its slot full (the ``exc`` of
    its busy retries, and its failure once ``max_retries`` is exceeded)."""


class TaskPredicate(CeleriacError):
    """Base class of the exceptions that steer what the worker does with a message."""


class Retry(TaskPredicate):
    """Raised by ``Task.retry``: the task was re-published and this run ends."""

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | str | None = None,
        when: float | datetime | None = None,
        is_eager: bool = False,
        sig: Any = None,
        **kwargs: Any,
    ) -> None:
        self.message = message
        self.exc = exc
        self.when = when
        self.is_eager = is_eager
        self.sig = sig
        #: RETRY was stored before the new message was sent (``Task.retry`` in a worker)
        self.state_stored = False
        super().__init__(self, exc, when, **kwargs)

    def humanize(self) -> str:
        if isinstance(self.when, (int, float)):
            return f"in {self.when}s"
        return f"at {self.when}"

    def __str__(self) -> str:
        if self.message:
            return self.message
        if self.exc:
            return f"Retry {self.humanize()}: {self.exc!r}"
        return f"Retry {self.humanize()}"

    def __reduce__(self) -> Any:
        return self.__class__, (self.message, self.exc, self.when)


RetryTaskError = Retry


class Ignore(TaskPredicate):
    """The task chose to end without a state being recorded."""


class Reject(TaskPredicate):
    """Reject the message: requeue it, or send it to the dead-letter store."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)

    def __repr__(self) -> str:
        return f"reject requeue={self.requeue}: {self.reason}"


class SoftTimeLimitExceeded(Exception):
    """Raised inside a task when its soft time limit passes."""

    def __str__(self) -> str:
        return "SoftTimeLimitExceeded" + (f"{self.args!r}" if self.args else "()")


class TimeLimitExceeded(Exception):
    """The task passed its hard time limit and its process was ended."""

    def __str__(self) -> str:
        return "TimeLimitExceeded" + (f"{self.args!r}" if self.args else "()")


class ContentDisallowed(CeleriacError):
    """A message's content type is not in ``accept_content``."""


class DecodeError(CeleriacError):
    """A message could not be decoded."""


class EncodeError(CeleriacError, TypeError, ValueError):
    """A value could not be serialized (kombu's ``EncodeError``, which ``delay()`` raises
    in Celery). Also a ``TypeError`` and a ``ValueError``, so code written against the
    JSON module (``except TypeError``) or kombu (``except EncodeError``) catches it."""


class MessageTooLarge(DecodeError, ValueError):
    """A message (or its decompressed body) is larger than ``task_message_max_size``."""


class RemoteTaskError(TaskError):
    """A task failed with an exception type this process may not re-create.

    ``exc_type`` and ``exc_module`` name the original class; ``args`` hold its message.
    """

    def __init__(self, exc_type: str, exc_module: str | None, *args: Any) -> None:
        super().__init__(*args)
        self.exc_type = exc_type
        self.exc_module = exc_module

    def __str__(self) -> str:
        message = ", ".join(str(a) for a in self.args)
        origin = f"{self.exc_module}.{self.exc_type}" if self.exc_module else self.exc_type
        return f"{origin}: {message}" if message else origin

    def __repr__(self) -> str:  # names the original class (``celeriac result`` prints it)
        return f"RemoteTaskError({str(self)!r})"

    def __reduce__(self) -> Any:
        return self.__class__, (self.exc_type, self.exc_module, *self.args)


# -- the rest of celery.exceptions, so ``except celery.exceptions.X`` keeps working ---------
UNREGISTERED_FMT = """\
Task of kind {0} never registered, please make sure it's imported."""


class CeleryWarning(UserWarning):
    """Base class of celeriac's warnings (Celery's name)."""


class AlwaysEagerIgnored(CeleryWarning):
    """send_task ignores task_always_eager."""


class DuplicateNodenameWarning(CeleryWarning):
    """Multiple workers are using the same nodename."""


class FixupWarning(CeleryWarning):
    """Fixup related warning."""


class NotConfigured(CeleryWarning):
    """Celery has not been configured, as no config module has been found."""


class SecurityWarning(CeleryWarning):
    """Potential security issue found."""


class DuplicateTaskNameWarning(CeleryWarning):
    """A task with the same name was registered twice."""


class CPendingDeprecationWarning(PendingDeprecationWarning):
    """Celery's pending-deprecation warning."""


class CDeprecationWarning(DeprecationWarning):
    """Celery's deprecation warning."""


class SecurityError(CeleriacError):
    """A message is unsigned, badly signed, replayed or undecryptable (Celery's name)."""


class InvalidTaskError(CeleriacError):
    """The task has invalid data or is not properly constructed."""


class IncompleteStream(TaskError):
    """Found the end of a stream of data, but the data is not yet complete."""


class BackendError(CeleriacError):
    """An issue writing or reading to/from the result store."""


class BackendGetMetaError(BackendError):
    """An issue reading from the result store."""

    def __init__(self, *args: Any, task_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args)
        self.task_id = task_id


class ResultDecodeError(BackendGetMetaError, DecodeError):
    """The stored result of a task is not Celery's result meta (not JSON, not an object,
    or a field of the wrong type); ``task_id`` names the task."""

    def __init__(self, task_id: str, detail: str) -> None:
        super().__init__(f"malformed result for task {task_id}: {detail}", task_id=task_id)


class BackendStoreError(BackendError):
    """An issue writing to the result store."""

    def __init__(self, *args: Any, state: str | None = None, task_id: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args)
        self.state = state
        self.task_id = task_id


class WorkerTerminate(SystemExit):
    """Signals that the worker should terminate immediately."""


SystemTerminate = WorkerTerminate


class WorkerShutdown(SystemExit):
    """Signals that the worker should perform a warm shutdown."""


class Terminated(WorkerLostError):
    """The task was terminated by a signal."""


class CeleryCommandException(CeleriacError):
    """A CLI command failed (Celery's click exception, without click)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
