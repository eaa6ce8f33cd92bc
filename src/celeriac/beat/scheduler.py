"""The beat scheduler loop: lease, stand-by, reload on change, recover claims, fire.

Any number of schedulers may run against one store. Each tick:

1. take or renew the **leader lease**. The leader works (steps 2-4) every
   tick. A scheduler without the lease **stands by**: it re-reads every
   entry's cursor, and as soon as a fire is still unsent a short grace after
   its time (:func:`~celeriac.schedules.policy.takeover_grace`: 1 s, or half
   the fire's max lateness if less) it warns and works like a leader for one
   lease period, whether or not the lease is free yet. So a dead or stalled
   leader costs about one grace plus one tick, not a lease period, and the
   lease is only an optimisation (one node normally does the claiming);
2. reload entries when the store's ``generation`` changed (runtime edits are
   seen within one tick);
3. re-send abandoned claims (:mod:`.claims`: same task id, never a live
   scheduler's claim);
4. for each enabled entry, apply the missed-run policy (:mod:`celeriac.schedules.policy`) and
   **claim** each fire to send (atomic, fenced by entry version and cursor),
   publish it, mark it sent; fires the policy does not send are named in a
   warning by the scheduler whose claim (or drop) moved the cursor past them;
5. sleep until the next fire, at most ``beat_max_loop_interval`` (5 s) and a
   third of the lease (a stand-by scheduler: until the next fire plus grace).

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

from .. import retry
from ..exceptions import ImproperlyConfigured, OperationalError
from ..schedules.clock import Clock, ProcessClock
from ..schedules.editing import Schedules
from ..schedules.entries import StoredEntry
from ..schedules.firing import NOT_SENT, SENT_NOT_MARKED, deliver, mark, new_record
from ..schedules.kinds import app_timezone
from ..schedules.policy import Plan, describe_skipped, plan, skip_reason, takeover_grace
from ..schedules.store import FireRecord, ScheduleStore
from ..schedules.stores import store_for_app
from ..worker.outage import Weather
from .claims import ClaimBook

logger = logging.getLogger("celeriac.beat")

DEFAULTS = {
    "beat_max_loop_interval": 5.0,
    "beat_lease_seconds": 10.0,
    "beat_claim_timeout": 30.0,
    "beat_fire_retention": 3600.0,
}
PRUNE_EVERY = 300.0
BEAT_LOST = ("beat keeps ticking; fires that fall due meanwhile follow the missed-run "
             "policy once it is back")
BEAT_BACK = "claiming and sending fires again"
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
        self.clock = clock or ProcessClock()
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
        #: Working without the lease until then (a stand-by that found a fire unsent).
        self.acting_until: datetime | None = None
        self._next_lease_try: datetime | None = None
        self.claims = ClaimBook(self.store, self.node_id, self.claim_timeout, self.clock)
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
        if retry.watching() is None:  # a worker running beat (-B) has its own watch
            retry.watch_outages(Weather(log=logger, lost=BEAT_LOST, back=BEAT_BACK))
        keeper_stop = threading.Event()
        keeper = self.claims.keep_fresh(keeper_stop)
        ready = False
        try:
            while not stop.is_set():
                try:
                    if not ready:  # retried until the store is reachable
                        self.setup()
                        ready = True
                    delay = self.tick()
                except OperationalError as exc:  # an outage: one line each way (the watch)
                    logger.debug("beat: tick failed (%s); retrying", exc)
                    self._lost_track()
                    delay = min(self.max_interval, 1.0)
                except Exception:
                    logger.exception("beat: tick failed; retrying")
                    self._lost_track()
                    delay = min(self.max_interval, 1.0)
                self._sleep(delay, stop)
                watch = retry.watching()
                if isinstance(watch, Weather):
                    watch.tick()
        finally:
            keeper_stop.set()
            keeper.join(5)
            self.close()

    def _lost_track(self) -> None:
        """After a failed tick: ask for the lease and read everything afresh."""
        self.is_leader, self._generation = False, None
        self._next_lease_try = None
        self.claims.forget_watch()

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
        acting = self.acting_until is not None and now < self.acting_until
        if self.is_leader or acting or self._next_lease_try is None or now >= self._next_lease_try:
            # a follower asks for the lease every third of it; stand_by covers the meantime
            self._next_lease_try = now + timedelta(seconds=self.lease_seconds / 3)
            leader = self.store.acquire_lease(self.node_id, now, self.lease_seconds)
        else:
            leader = False
        if leader != self.is_leader:
            logger.info("beat: %s %s the leader lease", self.node_id,
                        "took" if leader else "lost")
            self.is_leader, self._generation = leader, None
        if leader:
            self.acting_until = None
            return self.run_due(now)
        if acting:
            return self.run_due(now)
        self.acting_until = None
        return self.stand_by(now)

    def stand_by(self, now: datetime) -> float:
        """A follower's tick: re-send abandoned claims, and work if a fire went unsent."""
        self.recover(now)
        self.refresh(force=True)  # cursors move with every claim: read them all
        late: list[tuple[str, datetime]] = []
        waits = [self.max_interval, self.lease_seconds / 3]
        for entry in self.entries.values():
            first = entry.next_run_at(self.tz)
            if first is None:
                continue
            after = (first - now).total_seconds() + takeover_grace(entry, first, self.tz)
            if after <= 0:
                late.append((entry.name, first))
            waits.append(after)
        if not late:
            return max(0.0, min(waits))
        self.acting_until = now + timedelta(seconds=self.lease_seconds)
        named = ", ".join(f"{name!r} fire {fire.isoformat()}" for name, fire in late)
        logger.warning("beat: %s taking over from the leader (%s): %s not sent on time; "
                       "this scheduler sends fires for the next %gs, or until it holds the "
                       "lease", self.node_id, self.store.lease_holder(now) or "lease expired",
                       named, self.lease_seconds)
        return self.run_due(now, recover=False)

    def run_due(self, now: datetime, *, recover: bool = True) -> float:
        """The leader's work for one tick (the lease is not checked here)."""
        self.refresh()
        if recover:
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

    def _reload(self, name: str) -> StoredEntry | None:
        entry = self.store.get_entry(name)
        if entry is None:
            self.entries.pop(name, None)
        else:
            self.entries[name] = entry
        return entry

    def _run_entry(self, entry: StoredEntry, now: datetime) -> datetime | None:
        decision = plan(entry, now, self.tz)
        if decision.skipped:  # look again before skipping: another node may have sent them
            fresh = self._reload(entry.name)
            if fresh is None:
                return None
            entry, decision = fresh, plan(fresh, now, self.tz)
        warned = False
        for fire in decision.send:
            entry = self.entries.get(entry.name, entry)
            if not self.fire(entry, fire, now):
                return now  # someone else moved this entry on: look again next tick
            if not warned:
                warned = self._warn_skipped(entry, decision)
        if decision.drop_through is not None:
            entry = self.entries.get(entry.name, entry)
            if self.store.drop_through(entry.name, entry.version, decision.drop_through):
                self.entries[entry.name] = replace(entry, dropped_through=decision.drop_through)
                if not warned:
                    self._warn_skipped(entry, decision)
            else:
                self._reload(entry.name)
        return decision.next_fire

    def _warn_skipped(self, entry: StoredEntry, decision: Plan) -> bool:
        """Name the fires the policy skipped (once our claim or drop moved the cursor)."""
        if decision.skipped:
            logger.warning("beat: %r: missed fires not sent (%s): %s", entry.name,
                           skip_reason(entry, decision, self.tz), describe_skipped(decision))
        return True

    def fire(self, entry: StoredEntry, fire_time: datetime, now: datetime) -> bool:
        """Claim one fire and publish it; False if the claim was refused."""
        record = new_record(entry.spec, fire_time, self.node_id, now)
        if not self.store.claim_fire(record, entry.version):
            self._reload(entry.name)
            return False
        self.entries[entry.name] = replace(entry, last_run_at=fire_time,
                                           total_run_count=entry.total_run_count + 1)
        self._deliver(record, now)
        return True

    def _deliver(self, record: FireRecord, now: datetime) -> bool:
        """Publish a claim we hold, keeping it fresh (:mod:`.claims`) until it is marked."""
        self.claims.hold(record)
        outcome = NOT_SENT
        try:
            outcome = deliver(self.app, self.store, record, now)
        finally:
            if outcome == SENT_NOT_MARKED:
                self.claims.published_unmarked(record)
            else:
                self.claims.release(record)
        return outcome != NOT_SENT

    def recover(self, now: datetime) -> int:
        """Mark what we sent but could not mark; re-send claims abandoned by their claimer."""
        for record in self.claims.unmarked():
            if mark(self.store, record, now, attempts=1):
                self.claims.release(record)
        sent = 0
        for record in self.claims.abandoned(now):
            if self.store.take_over(record, self.node_id, now, now):
                logger.warning("beat: re-sending %r fire %s, task id %s (claimed by %s, never "
                               "marked sent; if that scheduler had published it just before "
                               "it stopped, this is a second copy with the same task id)",
                               record.entry, record.fire_time.isoformat(), record.task_id,
                               record.owner)
                taken = replace(record, owner=self.node_id, claimed_at=now)
                sent += self._deliver(taken, now)
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
