"""The in-memory schedule store: one process (tests, ``memory://`` brokers), shared per URL."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from ...schedules.entries import StoredEntry
from ...schedules.store import (
    CLAIMED,
    SENT,
    FireRecord,
    ScheduleStore,
    definition_changed,
    to_us,
)

_MEMORY_STORES: dict[str, MemoryStore] = {}
_MEMORY_LOCK = threading.Lock()


class MemoryStore(ScheduleStore):
    """A process-local store (tests, ``memory://`` brokers). Shared per URL."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._lock = threading.RLock()
        self._entries: dict[str, StoredEntry] = {}
        self._fires: dict[tuple[str, int], FireRecord] = {}
        self._generation = 0
        self._lease: tuple[str, datetime] | None = None

    @classmethod
    def shared(cls, url: str) -> MemoryStore:
        with _MEMORY_LOCK:
            if url not in _MEMORY_STORES:
                _MEMORY_STORES[url] = cls(url)
            return _MEMORY_STORES[url]

    def list_entries(self) -> list[StoredEntry]:
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: e.name)

    def get_entry(self, name: str) -> StoredEntry | None:
        with self._lock:
            return self._entries.get(name)

    def generation(self) -> int:
        with self._lock:
            return self._generation

    def put_entry(self, entry: StoredEntry, expected_version: int | None) -> bool:
        with self._lock:
            current = self._entries.get(entry.name)
            if expected_version is None:
                if current is not None:
                    return False
                self._entries[entry.name] = replace(entry, last_run_at=None, total_run_count=0,
                                                    dropped_through=None)
            else:
                if current is None or current.version != expected_version:
                    return False
                self._entries[entry.name] = definition_changed(current, entry)
            self._generation += 1
            return True

    def delete_entry(self, name: str) -> bool:
        with self._lock:
            if self._entries.pop(name, None) is None:
                return False
            self._generation += 1
            return True

    def claim_fire(self, record: FireRecord, version: int) -> bool:
        with self._lock:
            entry = self._entries.get(record.entry)
            key = (record.entry, to_us(record.fire_time))
            if entry is None or key in self._fires:
                return False
            if not record.manual and (not entry.enabled or entry.version != version
                                      or record.fire_time <= entry.cursor()):
                return False
            self._fires[key] = record
            last = entry.last_run_at if record.manual else record.fire_time
            self._entries[record.entry] = replace(
                entry, last_run_at=last, total_run_count=entry.total_run_count + 1)
            return True

    def drop_through(self, name: str, version: int, instant: datetime) -> bool:
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry.version != version or instant <= entry.cursor():
                return False
            self._entries[name] = replace(entry, dropped_through=instant)
            return True

    def mark_sent(self, entry: str, fire_time: datetime, sent_at: datetime) -> None:
        with self._lock:
            key = (entry, to_us(fire_time))
            if key in self._fires:
                self._fires[key] = replace(self._fires[key], state=SENT, sent_at=sent_at)

    def stale_claims(self, claimed_before: datetime) -> list[FireRecord]:
        with self._lock:
            return sorted((f for f in self._fires.values()
                           if f.state == CLAIMED and f.claimed_at < claimed_before),
                          key=lambda f: f.fire_time)

    def take_over(self, record: FireRecord, owner: str, now: datetime,
                  claimed_before: datetime) -> bool:
        with self._lock:
            key = (record.entry, to_us(record.fire_time))
            current = self._fires.get(key)
            if (current is None or current.state != CLAIMED
                    or current.claimed_at != record.claimed_at
                    or current.claimed_at >= claimed_before):
                return False
            self._fires[key] = replace(current, owner=owner, claimed_at=now)
            return True

    def list_fires(self, entry: str | None = None) -> list[FireRecord]:
        with self._lock:
            return sorted((f for f in self._fires.values() if entry in (None, f.entry)),
                          key=lambda f: (f.fire_time, f.entry))

    def prune_fires(self, before: datetime) -> int:
        with self._lock:
            old = [k for k, f in self._fires.items() if f.state == SENT and f.fire_time < before]
            for key in old:
                del self._fires[key]
            return len(old)

    def acquire_lease(self, owner: str, now: datetime, ttl: float) -> bool:
        with self._lock:
            if self._lease is None or self._lease[0] == owner or self._lease[1] <= now:
                self._lease = (owner, now + timedelta(seconds=ttl))
                return True
            return False

    def release_lease(self, owner: str) -> None:
        with self._lock:
            if self._lease is not None and self._lease[0] == owner:
                self._lease = None

    def lease_holder(self, now: datetime) -> str | None:
        with self._lock:
            if self._lease is None or self._lease[1] <= now:
                return None
            return self._lease[0]


def store_for_url(url: str, *, app: Any = None, options: Mapping[str, Any] | None = None,
                  prefix: str = "") -> MemoryStore:
    """The process-wide memory store for ``url`` (the engine registry's beat store)."""
    return MemoryStore.shared(url)
