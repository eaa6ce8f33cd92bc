"""``Schedules``: list, add, change, enable, disable, remove and run entries at runtime.

``Schedules(app)`` (exposed as ``app.schedules``) edits the schedule store that
every scheduler of the app reads; running schedulers see a change within one
tick. Every edit is a compare-and-set on the entry's version, and bumping the
version fences off fires a scheduler computed from the old definition, so an
edit never duplicates a fire. :meth:`Schedules.sync_from_code` is how
schedulers load ``beat_schedule`` / ``add_periodic_task`` entries at start.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from dataclasses import replace as dc_replace
from datetime import datetime
from typing import Any

from .clock import Clock, ProcessClock
from .entries import SOURCE_CODE, SOURCE_RUNTIME, EntrySpec, StoredEntry, specs_from_conf
from .firing import deliver, new_record
from .kinds import BaseSchedule, app_timezone, crontab, maybe_schedule, schedule
from .store import ScheduleStore
from .stores import store_for_app

logger = logging.getLogger("celeriac.beat")
CAS_ATTEMPTS = 20


def describe(sched: BaseSchedule) -> str:
    """Short human form: ``every 10s`` or ``cron 30 7 * * 1`` (m h dom mon dow)."""
    if isinstance(sched, schedule):
        return f"every {sched.seconds:g}s"
    if isinstance(sched, crontab):
        j = sched.to_json()
        return (f"cron {j['minute']} {j['hour']} {j['day_of_month']} {j['month_of_year']} "
                f"{j['day_of_week']}")
    return repr(sched)


@dataclass(frozen=True)
class EntryInfo:
    """One entry as shown by ``list()`` and ``celeriac schedule list``."""

    name: str
    task: str
    schedule: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    options: Mapping[str, Any]
    enabled: bool
    last_run_at: datetime | None
    next_run_at: datetime | None
    total_run_count: int
    missed: str
    max_lateness: float | None
    source: str
    version: int


class Schedules:
    """Runtime editing API for an app's periodic tasks."""

    def __init__(self, app: Any, store: ScheduleStore | None = None,
                 clock: Clock | None = None) -> None:
        self.app = app
        self._store = store
        self.clock = clock or ProcessClock()

    @property
    def store(self) -> ScheduleStore:
        if self._store is None:
            self._store = store_for_app(self.app)
        return self._store

    # -- reading -----------------------------------------------------------------
    def _info(self, entry: StoredEntry, now: datetime) -> EntryInfo:
        spec = entry.spec
        nxt = entry.next_run_at(app_timezone(self.app))
        if nxt is not None and nxt < now:  # overdue: shown as the next one the policy runs
            nxt = spec.schedule.next_fire_after(now, anchor=entry.anchor,
                                                tz=app_timezone(self.app))
        return EntryInfo(name=spec.name, task=spec.task, schedule=describe(spec.schedule),
                         args=tuple(spec.args), kwargs=dict(spec.kwargs),
                         options=dict(spec.options), enabled=entry.enabled,
                         last_run_at=entry.last_run_at, next_run_at=nxt,
                         total_run_count=entry.total_run_count, missed=spec.missed,
                         max_lateness=spec.max_lateness, source=entry.source,
                         version=entry.version)

    def list(self) -> list[EntryInfo]:
        now = self.clock.now()
        return [self._info(e, now) for e in self.store.list_entries()]

    def get(self, name: str) -> EntryInfo:
        entry = self.store.get_entry(name)
        if entry is None:
            raise KeyError(f"no periodic task named {name!r}")
        return self._info(entry, self.clock.now())

    # -- editing -----------------------------------------------------------------
    def add(self, name: str, task: str, schedule: float | BaseSchedule | Any,
            args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None,
            options: Mapping[str, Any] | None = None, *, missed: str = "latest",
            max_lateness: float | None = None, enabled: bool = True,
            replace: bool = False) -> EntryInfo:
        """Create an entry (or, with ``replace=True``, redefine an existing one)."""
        sched = maybe_schedule(schedule, app=self.app)
        if sched is None:
            raise ValueError("add: schedule is required")
        spec = EntrySpec(name=name, task=task, schedule=sched, args=tuple(args),
                         kwargs=dict(kwargs or {}), options=dict(options or {}),
                         missed=missed, max_lateness=max_lateness)
        now = self.clock.now()
        fresh = StoredEntry(spec=spec, enabled=enabled, anchor=now, source=SOURCE_RUNTIME)
        if self.store.put_entry(fresh, None):
            return self.get(name)
        if not replace:
            raise ValueError(f"a periodic task named {name!r} exists (use replace=True)")
        return self._edit(name, lambda cur: self._redefined(cur, spec, now, enabled=enabled))

    def update(self, name: str, **changes: Any) -> EntryInfo:
        """Change some of task, schedule, args, kwargs, options, missed, max_lateness."""
        allowed = {"task", "schedule", "args", "kwargs", "options", "missed", "max_lateness"}
        unknown = set(changes) - allowed
        if unknown:
            raise TypeError(f"update: unknown fields {sorted(unknown)}")
        if "schedule" in changes:
            changes["schedule"] = maybe_schedule(changes["schedule"], app=self.app)
        if "args" in changes:
            changes["args"] = tuple(changes["args"])
        now = self.clock.now()

        def change(cur: StoredEntry) -> StoredEntry:
            spec = dc_replace(cur.spec, **changes)
            return self._redefined(cur, spec, now, enabled=cur.enabled)

        return self._edit(name, change)

    def remove(self, name: str) -> bool:
        return self.store.delete_entry(name)

    def enable(self, name: str) -> EntryInfo:
        """Enable an entry; fires that fell while it was disabled are not caught up."""
        now = self.clock.now()
        return self._edit(name, lambda cur: cur if cur.enabled else cur.bumped(
            enabled=True, anchor=max(now, cur.anchor)))

    def disable(self, name: str) -> EntryInfo:
        return self._edit(name, lambda cur: cur.bumped(enabled=False) if cur.enabled else cur)

    def run_now(self, name: str) -> str:
        """Send the entry's task now (a manual fire, counted in ``total_run_count``)."""
        entry = self.store.get_entry(name)
        if entry is None:
            raise KeyError(f"no periodic task named {name!r}")
        now = self.clock.now()
        record = new_record(entry.spec, now, owner="run-now", now=now, manual=True)
        if not self.store.claim_fire(record, entry.version):
            raise RuntimeError(f"run-now of {name!r} could not be recorded; try again")
        if not deliver(self.app, self.store, record, now):
            raise RuntimeError(f"run-now of {name!r}: publishing failed (it will be retried "
                               f"by a running scheduler with task id {record.task_id})")
        return record.task_id

    # -- internals -----------------------------------------------------------------
    @staticmethod
    def _redefined(cur: StoredEntry, spec: EntrySpec, now: datetime, *,
                   enabled: bool) -> StoredEntry:
        same_schedule = spec.schedule == cur.spec.schedule
        anchor = cur.anchor if same_schedule and cur.enabled == enabled else max(now, cur.anchor)
        return cur.bumped(spec=spec, enabled=enabled, anchor=anchor)

    def _edit(self, name: str, change: Any) -> EntryInfo:
        for _ in range(CAS_ATTEMPTS):
            cur = self.store.get_entry(name)
            if cur is None:
                raise KeyError(f"no periodic task named {name!r}")
            new = change(cur)
            if new is cur or self.store.put_entry(new, cur.version):
                return self.get(name)
        raise RuntimeError(f"{name!r} is being changed concurrently; try again")

    def sync_from_code(self, specs: Iterable[EntrySpec] | None = None) -> None:
        """Load code-defined entries into the store (at scheduler start).

        New entries are inserted; an entry whose code definition changed since
        the last sync is redefined (a runtime edit of a code entry lasts until
        its code changes); code entries no longer in the code are removed.
        Enabled flags set at runtime are kept.
        """
        specs = list(specs_from_conf(self.app) if specs is None else specs)
        now = self.clock.now()
        for spec in specs:
            self._sync_one(spec, now)
        names = {spec.name for spec in specs}
        for entry in self.store.list_entries():
            if entry.source == SOURCE_CODE and entry.name not in names:
                logger.info("beat: removing %s (no longer defined in code)", entry.name)
                self.store.delete_entry(entry.name)

    def _sync_one(self, spec: EntrySpec, now: datetime) -> None:
        digest = spec.definition_hash()
        for _ in range(CAS_ATTEMPTS):
            cur = self.store.get_entry(spec.name)
            if cur is None:
                fresh = StoredEntry(spec=spec, anchor=now, source=SOURCE_CODE, code_hash=digest)
                if self.store.put_entry(fresh, None):
                    return
                continue
            if cur.code_hash == digest:
                return
            new = dc_replace(self._redefined(cur, spec, now, enabled=cur.enabled),
                             source=SOURCE_CODE, code_hash=digest)
            if self.store.put_entry(new, cur.version):
                return
        raise RuntimeError(f"beat: could not sync {spec.name!r} (concurrent edits)")
