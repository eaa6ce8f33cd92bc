"""What the history store keeps: task records, their attempts, audit entries and filters.

A :class:`TaskRecord` is one task id's story, merged from Celery events
(``task-sent`` ... ``task-succeeded``), the result store and the dashboard's
own actions. Every delivery attempt (a retry is a new attempt of the same
id) is an :class:`Attempt`. :class:`TaskFilter` is the one filter every
listing, count and bulk action shares, so "retry everything matching" acts
on exactly the rows the page showed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: Columns of the ``tasks`` table, in order (the dataclass fields of TaskRecord).
TASK_COLUMNS = (
    "task_id", "name", "state", "queue", "routing_key", "worker", "args", "kwargs", "result",
    "exception", "traceback", "retries", "root_id", "parent_id", "eta", "expires", "sent_at",
    "received_at", "started_at", "finished_at", "runtime", "ts", "state_ts", "updated_at",
    "retried_from", "source",
)

ATTEMPT_COLUMNS = ("task_id", "attempt", "worker", "received_at", "started_at",
                   "finished_at", "state", "runtime", "exception")


@dataclass
class TaskRecord:
    """One task id as the dashboard knows it."""

    task_id: str
    name: str | None = None
    state: str = "PENDING"
    queue: str | None = None
    routing_key: str | None = None
    worker: str | None = None
    args: str | None = None          # argsrepr as the sender/worker reported it
    kwargs: str | None = None        # kwargsrepr
    result: str | None = None        # repr of the return value
    exception: str | None = None
    traceback: str | None = None
    retries: int = 0
    root_id: str | None = None
    parent_id: str | None = None
    eta: str | None = None
    expires: str | None = None
    sent_at: float | None = None
    received_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    runtime: float | None = None
    ts: float = 0.0                  # first seen: the sort key of every listing
    state_ts: float = 0.0            # timestamp of the event that set ``state``
    updated_at: float = 0.0
    retried_from: str | None = None  # the task id a dashboard retry copied
    source: str = "events"           # events | dashboard | results

    def as_row(self) -> tuple[Any, ...]:
        return tuple(getattr(self, c) for c in TASK_COLUMNS)

    @classmethod
    def from_row(cls, row: Any) -> TaskRecord:
        return cls(**dict(zip(TASK_COLUMNS, row, strict=True)))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def time_to_start(self) -> float | None:
        """Seconds from sent (or received) to started, when both are known."""
        begin = self.sent_at or self.received_at
        if begin is None or self.started_at is None:
            return None
        return max(0.0, self.started_at - begin)


@dataclass
class Attempt:
    """One delivery of a task: who ran it, when, and how it ended."""

    task_id: str
    attempt: int
    worker: str | None = None
    received_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    state: str | None = None
    runtime: float | None = None
    exception: str | None = None

    def as_row(self) -> tuple[Any, ...]:
        return tuple(getattr(self, c) for c in ATTEMPT_COLUMNS)

    @classmethod
    def from_row(cls, row: Any) -> Attempt:
        return cls(**dict(zip(ATTEMPT_COLUMNS, row, strict=True)))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AuditEntry:
    """One action taken through the dashboard."""

    ts: float
    user: str
    action: str
    target: str
    detail: str = ""
    id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TaskFilter:
    """A filter over task records; empty fields do not filter."""

    states: list[str] = field(default_factory=list)
    name: str | None = None          # exact, or a prefix ending in ``*``
    queue: str | None = None
    worker: str | None = None
    since: float | None = None       # ts >= since
    until: float | None = None       # ts < until
    text: str | None = None          # substring of args or kwargs
    root_id: str | None = None
    parent_id: str | None = None

    FIELDS = ("state", "name", "queue", "worker", "since", "until", "text")

    @classmethod
    def from_params(cls, params: Any) -> TaskFilter:
        """Build from query parameters (``state`` may repeat or be comma-separated)."""
        states: list[str] = []
        getlist = getattr(params, "getlist", None)
        raw_states = getlist("state") if getlist else [params.get("state") or ""]
        for value in raw_states:
            states.extend(s.strip().upper() for s in str(value or "").split(",") if s.strip())

        def text(key: str) -> str | None:
            value = params.get(key)
            return str(value).strip() or None if value is not None else None

        def number(key: str) -> float | None:
            value = text(key)
            if value is None:
                return None
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"{key} must be a number of epoch seconds, not {value!r}")

        return cls(states=states, name=text("name"), queue=text("queue"),
                   worker=text("worker"), since=number("since"), until=number("until"),
                   text=text("text"), root_id=text("root_id"), parent_id=text("parent_id"))

    def as_params(self) -> dict[str, str]:
        """The query parameters that rebuild this filter (links, bulk forms)."""
        out: dict[str, str] = {}
        if self.states:
            out["state"] = ",".join(self.states)
        for key in ("name", "queue", "worker", "text", "root_id", "parent_id"):
            value = getattr(self, key)
            if value:
                out[key] = str(value)
        for key in ("since", "until"):
            value = getattr(self, key)
            if value is not None:
                out[key] = f"{value:g}"
        return out

    def is_empty(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self))
