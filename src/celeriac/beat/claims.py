"""Claims in flight: keeping our own alive, and deciding when another's is abandoned.

A fire is claimed in the store, published, then marked sent
(:mod:`celeriac.schedules.firing`). A claim left ``claimed`` must be re-sent by
someone, or the fire is lost; but re-sending the claim of a scheduler that is
merely slow (a publish waiting out a broker outage, a store that refused the
mark, a loaded host) sends the fire twice. Two rules tell the cases apart
without comparing clocks across hosts:

* **A live claimer keeps its claims fresh.** While a claim of ours is between
  claim and mark, a keeper thread rewrites its ``claimed_at`` every quarter of
  ``beat_claim_timeout`` (a compare-and-set on the value it last wrote). A
  normal fire is marked within milliseconds and never needs it.
* **Another scheduler re-sends a claim only after watching it unchanged** for
  ``beat_claim_timeout`` by its own clock, looking at it at least every half
  timeout (a longer gap, or a failed look, starts the watch again), and only
  if the claim is also that old by its own timestamp. A store outage stops the
  watch as well as the renewals, so a claimer cut off with everyone else is
  not declared dead when the store returns.

Our own claims whose publish failed are re-sent by us once they are
``beat_claim_timeout`` old. What is left is a scheduler that dies, or is
paused for longer than the timeout, between the broker accepting a message and
the store marking it: that fire is re-sent with the same task id (consumers
can de-duplicate on it) and the re-sending scheduler's warning names it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from datetime import datetime

from ..exceptions import OperationalError
from ..schedules.clock import Clock
from ..schedules.store import FireRecord, ScheduleStore

logger = logging.getLogger("celeriac.beat")
Key = tuple[str, datetime]


def key_of(record: FireRecord) -> Key:
    return record.entry, record.fire_time


class ClaimBook:
    """The claims one scheduler holds in flight, and what it saw of everyone else's."""

    def __init__(self, store: ScheduleStore, node_id: str, timeout: float, clock: Clock) -> None:
        self.store, self.node_id, self.clock = store, node_id, clock
        self.timeout = timeout
        self._lock = threading.Lock()
        self._held: dict[Key, FireRecord] = {}     # ours, claimed and not known marked
        self._unmarked: set[Key] = set()           # of those: published, mark pending
        self._seen: dict[Key, tuple[datetime, datetime]] = {}  # claimed_at, watched since
        self._last_look: datetime | None = None

    # -- our own claims ------------------------------------------------------------
    def hold(self, record: FireRecord) -> None:
        """``record`` is ours and about to be published: keep it fresh until released."""
        with self._lock:
            self._held[key_of(record)] = record

    def published_unmarked(self, record: FireRecord) -> None:
        """Published but not marked: keep it fresh and retry the mark, never the publish."""
        with self._lock:
            self._unmarked.add(key_of(record))

    def release(self, record: FireRecord) -> None:
        with self._lock:
            self._held.pop(key_of(record), None)
            self._unmarked.discard(key_of(record))

    def unmarked(self) -> list[FireRecord]:
        with self._lock:
            return [self._held[k] for k in self._unmarked if k in self._held]

    def renew(self, now: datetime) -> int:
        """Rewrite ``claimed_at`` of our claims in flight for over a quarter timeout."""
        with self._lock:
            due = [r for r in self._held.values()
                   if (now - r.claimed_at).total_seconds() >= self.timeout / 4]
        renewed = 0
        for record in due:
            if self.store.take_over(record, self.node_id, now, now):
                renewed += 1
                with self._lock:
                    if key_of(record) in self._held:
                        self._held[key_of(record)] = replace(record, owner=self.node_id,
                                                             claimed_at=now)
            else:
                logger.warning("beat: %s fire %s (task id %s) is still being sent here but "
                               "another scheduler took its claim over; it may be sent twice, "
                               "with the same task id", record.entry,
                               record.fire_time.isoformat(), record.task_id)
                self.release(record)
        return renewed

    def keep_fresh(self, stop: threading.Event) -> threading.Thread:
        """Start the keeper thread (renews until ``stop`` is set)."""
        interval = max(0.05, self.timeout / 8)

        def main() -> None:
            try:
                while not stop.wait(interval):
                    try:
                        self.renew(self.clock.now())
                    except OperationalError as exc:  # an outage (one line, the watch)
                        logger.debug("beat: could not renew claims in flight: %s", exc)
                    except Exception:
                        logger.warning("beat: could not renew claims in flight", exc_info=True)
            finally:
                release = getattr(self.store, "close_thread", None)
                if callable(release):
                    release()

        thread = threading.Thread(target=main, name="celeriac-beat-claims", daemon=True)
        thread.start()
        return thread

    # -- everyone's claims -------------------------------------------------------------
    def forget_watch(self) -> None:
        """Start watching afresh (after a failed look at the store)."""
        self._seen, self._last_look = {}, None

    def abandoned(self, now: datetime) -> list[FireRecord]:
        """Claims to re-send now: ours whose publish failed, others' watched unchanged."""
        claims = self.store.stale_claims(now)
        if self._last_look is None or (now - self._last_look).total_seconds() > self.timeout / 2:
            self._seen = {}
        self._last_look = now
        with self._lock:
            held = set(self._held)
        seen: dict[Key, tuple[datetime, datetime]] = {}
        ready: list[FireRecord] = []
        for record in claims:
            key = key_of(record)
            if key in held:
                continue
            claimed_at, since = self._seen.get(key, (record.claimed_at, now))
            if claimed_at != record.claimed_at:
                claimed_at, since = record.claimed_at, now
            seen[key] = (claimed_at, since)
            old = (now - record.claimed_at).total_seconds() >= self.timeout
            watched = (now - since).total_seconds() >= self.timeout
            if old and (watched or record.owner == self.node_id):
                ready.append(record)
        self._seen = seen
        return ready
