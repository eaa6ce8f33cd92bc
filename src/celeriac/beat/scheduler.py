"""The beat scheduler loop: lease, reload on change, recover claims, fire due entries.

Any number of schedulers may run against one store. Each tick:

1. take or renew the **leader lease**; a follower does nothing else and
   checks again soon (so one node normally does the work);
2. reload entries when the store's ``generation`` changed (runtime edits are
   seen within one tick);
3. re-send fires left ``claimed`` by a dead scheduler (same task id);
4. for each enabled entry, apply the missed-run policy (:mod:`celeriac.schedules.policy`) and
   **claim** each fire to send (atomic, fenced by entry version and cursor),
   publish it, mark it sent; fires the policy drops advance the cursor;
5. sleep until the next fire, at most ``beat_max_loop_interval`` (5 s) and a
   third of the lease.

Correctness never depends on the lease: a paused leader that wakes up after
another took over can only claim fires nobody claimed. Time comes from an
injectable :class:`~celeriac.schedules.clock.Clock`.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from ..exceptions import ImproperlyConfigured
from ..schedules.clock import Clock, SystemClock
from ..schedules.editing import Schedules
from ..schedules.entries import StoredEntry
from ..schedules.firing import deliver, new_record
from ..schedules.kinds import app_timezone
from ..schedules.policy import plan
from ..schedules.store import ScheduleStore
from ..schedules.stores import store_for_app

logger = logging.getLogger("celeriac.beat")

DEFAULTS = {
    "beat_max_loop_interval": 5.0,
    "beat_lease_seconds": 10.0,
    "beat_claim_timeout": 30.0,
    "beat_fire_retention": 3600.0,
}
PRUNE_EVERY = 300.0
SLEEP_SLICE = 0.25


def _setting(app: Any, name: str, value: float | None) -> float:
    if value is not None:
        return float(value)
    configured = app.conf.get(name)
    if isinstance(configured, timedelta):
        return configured.total_seconds()
    return float(configured) if configured else DEFAULTS[name]


class Scheduler:
    """One beat scheduler; run several for availability."""

    def __init__(self, app: Any, store: ScheduleStore | None = None, *,
                 clock: Clock | None = None, node_id: str | None = None,
                 max_interval: float | None = None, lease_seconds: float | None = None,
                 claim_timeout: float | None = None) -> None:
        self.app = app
        self.clock = clock or SystemClock()
        self._owns_store = store is None
        if store is None:
            store = store_for_app(app)
        self.store = store
        self.node_id = node_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.max_interval = _setting(app, "beat_max_loop_interval", max_interval)
        self.lease_seconds = _setting(app, "beat_lease_seconds", lease_seconds)
        self.claim_timeout = _setting(app, "beat_claim_timeout", claim_timeout)
        self.retention = _setting(app, "beat_fire_retention", None)
        self.tz = app_timezone(app)
        self.is_leader = False
        self.entries: dict[str, StoredEntry] = {}
        self._generation: int | None = None
        self._last_prune: datetime | None = None

    # -- lifecycle -----------------------------------------------------------------
    def setup(self) -> None:
        """Finalize the app (runs ``on_after_configure`` hooks) and sync code entries."""
        finalize = getattr(self.app, "finalize", None)
        if callable(finalize):
            finalize()
        Schedules(self.app, self.store, self.clock).sync_from_code()

    def run(self, stop: threading.Event | None = None) -> None:
        """Set up, then tick until ``stop`` is set; the lease is released on the way out."""
        stop = stop or threading.Event()
        ready = False
        try:
            while not stop.is_set():
                try:
                    if not ready:  # retried until the store is reachable
                        self.setup()
                        ready = True
                    delay = self.tick()
                except Exception:
                    logger.exception("beat: tick failed; retrying")
                    self.is_leader, self._generation = False, None
                    delay = min(self.max_interval, 1.0)
                self._sleep(delay, stop)
        finally:
            self.close()

    def _sleep(self, seconds: float, stop: threading.Event) -> None:
        remaining = seconds
        while remaining > 0 and not stop.is_set():
            step = min(remaining, SLEEP_SLICE)
            self.clock.sleep(step)
            remaining -= step

    def close(self) -> None:
        """Give up the lease (so a follower takes over at once) and close an owned store."""
        try:
            self.store.release_lease(self.node_id)
        except Exception:
            logger.warning("beat: could not release the lease", exc_info=True)
        self.is_leader = False
        if self._owns_store:
            self.store.close()

    # -- one tick --------------------------------------------------------------------
    def tick(self) -> float:
        """Do one round of work; return the seconds to sleep before the next."""
        now = self.clock.now()
        leader = self.store.acquire_lease(self.node_id, now, self.lease_seconds)
        if leader != self.is_leader:
            logger.info("beat: %s %s the leader lease", self.node_id,
                        "took" if leader else "lost")
            self.is_leader, self._generation = leader, None
        if not leader:
            return min(self.max_interval, self.lease_seconds / 3)
        return self.run_due(now)

    def run_due(self, now: datetime) -> float:
        """The leader's work for one tick (the lease is not checked here)."""
        self.refresh()
        self.recover(now)
        upcoming = [self._run_entry(entry, now) for entry in list(self.entries.values())]
        self._maybe_prune(now)
        after = self.clock.now()
        waits = [(t - after).total_seconds() for t in upcoming if t is not None]
        return max(0.0, min([self.max_interval, self.lease_seconds / 3, *waits]))

    def refresh(self, force: bool = False) -> bool:
        """Reload entries if the store changed since the last load."""
        generation = self.store.generation()
        if not force and generation == self._generation:
            return False
        self.entries = {e.name: e for e in self.store.list_entries()}
        self._generation = generation
        return True

    def _reload(self, name: str) -> None:
        entry = self.store.get_entry(name)
        if entry is None:
            self.entries.pop(name, None)
        else:
            self.entries[name] = entry

    def _run_entry(self, entry: StoredEntry, now: datetime) -> datetime | None:
        decision = plan(entry, now, self.tz)
        for fire in decision.send:
            entry = self.entries.get(entry.name, entry)
            if not self.fire(entry, fire, now):
                return now  # someone else moved this entry on: look again next tick
        if decision.drop_through is not None:
            entry = self.entries.get(entry.name, entry)
            if self.store.drop_through(entry.name, entry.version, decision.drop_through):
                self.entries[entry.name] = replace(entry, dropped_through=decision.drop_through)
                logger.warning("beat: %s: missed fires up to %s dropped (policy %r)", entry.name,
                               decision.drop_through.isoformat(), entry.spec.missed)
            else:
                self._reload(entry.name)
        return decision.next_fire

    def fire(self, entry: StoredEntry, fire_time: datetime, now: datetime) -> bool:
        """Claim one fire and publish it; False if the claim was refused."""
        record = new_record(entry.spec, fire_time, self.node_id, now)
        if not self.store.claim_fire(record, entry.version):
            self._reload(entry.name)
            return False
        self.entries[entry.name] = replace(entry, last_run_at=fire_time,
                                           total_run_count=entry.total_run_count + 1)
        deliver(self.app, self.store, record, now)
        return True

    def recover(self, now: datetime) -> int:
        """Re-send fires whose claimer died before marking them sent."""
        before = now - timedelta(seconds=self.claim_timeout)
        sent = 0
        for record in self.store.stale_claims(before):
            if self.store.take_over(record, self.node_id, now, before):
                logger.warning("beat: re-sending %s fire %s (claimed by %s, never marked sent)",
                               record.entry, record.fire_time.isoformat(), record.owner)
                sent += deliver(self.app, self.store, record, now)
        return sent

    def _maybe_prune(self, now: datetime) -> None:
        if self._last_prune and (now - self._last_prune).total_seconds() < PRUNE_EVERY:
            return
        self._last_prune = now
        self.store.prune_fires(now - timedelta(seconds=self.retention))


#: ``--scheduler`` / ``beat_scheduler`` paths that name Celery's classes, and what runs
#: instead (None: celeriac's store-backed :class:`Scheduler`).
SCHEDULER_ALIASES: dict[str, str | None] = {
    "celery.beat:PersistentScheduler": None,
    "celery.beat.PersistentScheduler": None,
    "celery.beat:Scheduler": None,
    "celery.beat.Scheduler": None,
    "django_celery_beat.schedulers:DatabaseScheduler":
        "celeriac.contrib.django.beat.schedulers:DatabaseScheduler",
    "django_celery_beat.schedulers.DatabaseScheduler":
        "celeriac.contrib.django.beat.schedulers:DatabaseScheduler",
}


def scheduler_class(name: Any) -> type[Scheduler]:
    """The scheduler class for ``--scheduler`` / ``beat_scheduler``.

    None and Celery's default scheduler give :class:`Scheduler`; a Celery path
    listed in :data:`SCHEDULER_ALIASES` gives its celeriac replacement (with a
    note); any other ``module:Class`` (or class) must be a :class:`Scheduler`
    subclass, else ImproperlyConfigured names it.
    """
    if name is None or name == "":
        return Scheduler
    if isinstance(name, type):
        if issubclass(name, Scheduler):
            return name
        raise ImproperlyConfigured(f"beat_scheduler: {name!r} is not a celeriac scheduler "
                                   "(subclass celeriac.beat.Scheduler)")
    path = str(name)
    if path in SCHEDULER_ALIASES:
        target = SCHEDULER_ALIASES[path]
        if target is None:
            return Scheduler
        logger.warning("beat: --scheduler %s runs celeriac's %s (same tables' names and admin, "
                       "fire-time claims kept; import existing django_celery_beat rows with "
                       "'manage.py celeriac_import')", path, target)
        path = target
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ImproperlyConfigured(f"beat_scheduler: cannot import {path!r}: {exc}") from exc
    if not (isinstance(found, type) and issubclass(found, Scheduler)):
        raise ImproperlyConfigured(f"beat_scheduler: {path!r} is not a celeriac scheduler "
                                   "(subclass celeriac.beat.Scheduler)")
    return found
