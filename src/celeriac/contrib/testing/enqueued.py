"""What waits in the broker, and assertions on it (Oban's ``assert_enqueued`` for celeriac).

"Enqueued" means *in the broker now*, ready or delayed and not taken by a
worker: what production would run. So a task sent with ``delay_on_commit``
inside a transaction that has not committed is not enqueued (the Kuma pitfall
of eager mode), and a task a running worker already took is not either. The
broker must list its waiting messages (:meth:`~celeriac.brokers.base.Broker.waiting`:
the memory broker of the test app, or SQLite).

Arguments are compared as a worker would receive them (tuples as lists, after
the serializer). ``countdown`` is compared with the message's ETA minus the
clock's now: exactly under a controlled clock (:mod:`.clock`), within ``delta``
seconds (default 1) under the real one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ... import clock
from ...app import state as _state
from ...app.base import Celery
from ...messages import Message, decode_body, to_timestamp

_UNSET: Any = object()


@dataclass(frozen=True)
class EnqueuedTask:
    """One waiting task message, decoded."""

    name: str
    id: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str
    priority: int | None
    eta: datetime | None
    expires: datetime | None
    message: Message = field(repr=False)

    @property
    def countdown(self) -> float | None:
        """Seconds from the clock's now to the ETA (None: ready now)."""
        if self.eta is None:
            return None
        return max(0.0, self.eta.timestamp() - clock.time())

    def describe(self) -> str:
        when = "" if self.eta is None else f" countdown={self.countdown:g}"
        return (f"{self.name}(args={self.args!r}, kwargs={self.kwargs!r}) queue={self.queue!r}"
                f"{when} priority={self.priority}")


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: what the JSON a worker receives holds."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _name(task: Any) -> str | None:
    if task is None or isinstance(task, str):
        return task
    return str(getattr(task, "name", task))


def _datetime(value: Any) -> datetime | None:
    stamp = to_timestamp(value)
    return None if stamp is None else datetime.fromtimestamp(stamp, clock.UTC)


class Enqueued:
    """The waiting task messages of one app's broker, with assertions."""

    def __init__(self, app: Celery, queues: Iterable[str] | None = None) -> None:
        self.app = app
        self.queues = list(queues) if queues is not None else None

    def all(self, task: Any = None, *, queue: str | None = None) -> list[EnqueuedTask]:
        """Every waiting task message (of ``task`` / ``queue`` if given), ready ones first."""
        broker = self.app.broker
        names = [queue] if queue else (self.queues or broker.queues())
        wanted = _name(task)
        found = []
        for queue_name in names:
            for item in broker.waiting(queue_name):
                message = item.message
                if wanted is not None and message.task_name != wanted:
                    continue
                args, kwargs, _embed = decode_body(message)
                headers = message.headers
                found.append(EnqueuedTask(
                    name=str(message.task_name), id=str(message.task_id), args=list(args),
                    kwargs=dict(kwargs), queue=item.queue, priority=item.priority,
                    eta=_datetime(headers.get("eta")),
                    expires=_datetime(headers.get("expires")), message=message))
        return found

    def matching(self, task: Any = None, *, args: Any = _UNSET, kwargs: Any = _UNSET,
                 queue: str | None = None, countdown: float | None = None,
                 eta: datetime | None = None, priority: int | None = None,
                 delta: float | None = None) -> list[EnqueuedTask]:
        """The waiting messages that match every criterion given."""
        tolerance = delta if delta is not None else (0.001 if clock.is_controlled() else 1.0)
        out = []
        for item in self.all(task, queue=queue):
            if args is not _UNSET and item.args != _plain(args):
                continue
            if kwargs is not _UNSET and item.kwargs != _plain(kwargs):
                continue
            if priority is not None and item.priority != priority:
                continue
            if countdown is not None and (item.countdown is None
                                          or abs(item.countdown - countdown) > tolerance):
                continue
            if eta is not None and (item.eta is None
                                    or abs(item.eta.timestamp() - eta.timestamp()) > tolerance):
                continue
            out.append(item)
        return out

    def assert_enqueued(self, task: Any = None, *, count: int | None = None,
                        **criteria: Any) -> list[EnqueuedTask]:
        """Fail unless a waiting message matches (exactly ``count`` of them, if given);
        return the matches."""
        found = self.matching(task, **criteria)
        if (count is None and found) or (count is not None and len(found) == count):
            return found
        expected = f"{count} x " if count is not None else ""
        raise AssertionError(f"Expected {expected}{self._wanted(task, criteria)} enqueued, "
                             f"found {len(found)} matching.\n{self._listing()}")

    def refute_enqueued(self, task: Any = None, **criteria: Any) -> None:
        """Fail if any waiting message matches."""
        found = self.matching(task, **criteria)
        if found:
            raise AssertionError(f"Expected no {self._wanted(task, criteria)} enqueued, found:\n"
                                 + "\n".join(f"  {item.describe()}" for item in found))

    def _wanted(self, task: Any, criteria: Mapping[str, Any]) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in criteria.items() if v is not _UNSET)
        return f"{_name(task) or 'any task'}" + (f" with {shown}" if shown else "")

    def _listing(self) -> str:
        waiting = self.all()
        if not waiting:
            return "Nothing is enqueued."
        return "Enqueued:\n" + "\n".join(f"  {item.describe()}" for item in waiting)


def _app_of(task: Any, app: Celery | None) -> Celery:
    if app is not None:
        return app
    found = getattr(task, "app", None) if task is not None and not isinstance(task, str) else None
    return found if found is not None else _state.get_current_app()


def all_enqueued(task: Any = None, *, app: Celery | None = None,
                 queue: str | None = None) -> list[EnqueuedTask]:
    """Every waiting task message of ``task``'s app (or ``app``, or the current app)."""
    return Enqueued(_app_of(task, app)).all(task, queue=queue)


def assert_enqueued(task: Any = None, *, app: Celery | None = None,
                    **criteria: Any) -> list[EnqueuedTask]:
    """``assert_enqueued(add, args=(2, 2), queue="math", countdown=60)``."""
    return Enqueued(_app_of(task, app)).assert_enqueued(task, **criteria)


def refute_enqueued(task: Any = None, *, app: Celery | None = None, **criteria: Any) -> None:
    """``refute_enqueued(add, args=(2, 2))``: no such message waits."""
    Enqueued(_app_of(task, app)).refute_enqueued(task, **criteria)
