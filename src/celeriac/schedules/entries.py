"""Beat entries: what a periodic task is (``EntrySpec``) and what the store knows of it.

``EntrySpec`` is the definition (task, schedule, args, kwargs, options and the
missed-run policy); ``StoredEntry`` adds the state kept in the schedule store
(enabled, version, anchor, last run, run count, where it came from). Both
convert to and from JSON so any store (SQLite, Redis, a Django table later)
can hold them as text. Celery's ``beat_schedule`` dicts are read by
:func:`spec_from_conf`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from .kinds import BaseSchedule, maybe_schedule, schedule_from_json

UTC = timezone.utc
MISSED_POLICIES = ("latest", "skip", "all")
#: Entry keys (top level or inside ``options``) that configure the missed-run policy.
POLICY_KEYS = ("missed", "max_lateness")
SOURCE_CODE, SOURCE_RUNTIME = "code", "runtime"


def jsonable(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class EntrySpec:
    """The definition of one periodic task."""

    name: str
    task: str
    schedule: BaseSchedule
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    missed: str = "latest"
    max_lateness: float | None = None

    def __post_init__(self) -> None:
        if self.missed not in MISSED_POLICIES:
            raise ValueError(f"beat entry {self.name!r}: missed must be one of "
                             f"{MISSED_POLICIES}, got {self.missed!r}")
        if self.max_lateness is not None and self.max_lateness < 0:
            raise ValueError(f"beat entry {self.name!r}: max_lateness must be >= 0")
        if not self.task:
            raise ValueError(f"beat entry {self.name!r}: task name is required")

    def definition(self) -> dict[str, Any]:
        """The JSON-ready definition (everything but the name)."""
        return {"task": self.task, "schedule": self.schedule.to_json(),
                "args": jsonable(list(self.args)), "kwargs": jsonable(dict(self.kwargs)),
                "options": jsonable(dict(self.options)), "missed": self.missed,
                "max_lateness": self.max_lateness}

    def definition_hash(self) -> str:
        text = json.dumps(self.definition(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    @classmethod
    def from_definition(cls, name: str, data: Mapping[str, Any], app: Any = None) -> EntrySpec:
        return cls(name=name, task=data["task"],
                   schedule=schedule_from_json(data["schedule"], app=app),
                   args=tuple(data.get("args") or ()), kwargs=dict(data.get("kwargs") or {}),
                   options=dict(data.get("options") or {}),
                   missed=data.get("missed") or "latest",
                   max_lateness=data.get("max_lateness"))


@dataclass(frozen=True)
class StoredEntry:
    """An entry as the schedule store holds it."""

    spec: EntrySpec
    enabled: bool = True
    version: int = 1
    anchor: datetime = datetime(1970, 1, 1, tzinfo=UTC)
    last_run_at: datetime | None = None
    total_run_count: int = 0
    dropped_through: datetime | None = None
    source: str = SOURCE_RUNTIME
    code_hash: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def cursor(self) -> datetime:
        """Fire times at or before this instant are decided (sent or dropped)."""
        marks = [m for m in (self.last_run_at, self.dropped_through) if m is not None]
        return max([self.anchor, *marks])

    def next_run_at(self, tz: tzinfo) -> datetime | None:
        if not self.enabled:
            return None
        return self.spec.schedule.next_fire_after(self.cursor(), anchor=self.anchor, tz=tz)

    def bumped(self, **changes: Any) -> StoredEntry:
        """A copy with ``changes`` applied and the version incremented."""
        return replace(self, version=self.version + 1, **changes)


def spec_from_conf(name: str, entry: Mapping[str, Any], app: Any = None) -> EntrySpec:
    """Read one Celery ``beat_schedule`` entry (``task``, ``schedule``, ``args``, ...)."""
    if "task" not in entry or "schedule" not in entry:
        raise ValueError(f"beat_schedule[{name!r}] needs 'task' and 'schedule'")
    options = dict(entry.get("options") or {})
    policy = {key: options.pop(key) for key in POLICY_KEYS if key in options}
    policy.update({key: entry[key] for key in POLICY_KEYS if key in entry})
    sched = maybe_schedule(entry["schedule"], bool(entry.get("relative", False)), app=app)
    if sched is None:
        raise ValueError(f"beat_schedule[{name!r}]: schedule is None")
    lateness = policy.get("max_lateness")
    if isinstance(lateness, timedelta):
        lateness = lateness.total_seconds()
    return EntrySpec(name=name, task=str(entry["task"]), schedule=sched,
                     args=tuple(entry.get("args") or ()), kwargs=dict(entry.get("kwargs") or {}),
                     options=options, missed=policy.get("missed") or "latest",
                     max_lateness=None if lateness is None else float(lateness))


def specs_from_conf(app: Any) -> list[EntrySpec]:
    """All entries of ``app.conf.beat_schedule``."""
    schedule_conf = app.conf.get("beat_schedule") or {}
    return [spec_from_conf(name, entry, app=app) for name, entry in schedule_conf.items()]


def entry_for_task(task: Any, run_every: Any, options: Mapping[str, Any] | None = None
                   ) -> dict[str, Any]:
    """The ``beat_schedule`` entry of ``@app.periodic_task(run_every=..., **options)``.

    Register it under ``task.name``. ``relative``, ``missed`` and
    ``max_lateness`` in ``options`` configure the entry; the rest are publish
    options (``queue``, ``priority``, ``expires``, ...).
    """
    opts = dict(options or {})
    entry: dict[str, Any] = {"task": task.name, "schedule": run_every, "args": (),
                             "kwargs": {}, "relative": bool(opts.pop("relative", False))}
    for key in POLICY_KEYS:
        if key in opts:
            entry[key] = opts.pop(key)
    entry["options"] = opts
    return entry
