"""Contract every schedule store passes (memory and SQLite here; Redis in tests/integration).

The ``store`` fixture is overridden by ``tests/integration/test_beat_redis_store.py``,
which runs these same tests against Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from celeriac.brokers.memory.beat_store import MemoryStore
from celeriac.brokers.sqlite.beat_store import SQLiteStore
from celeriac.schedules import crontab, schedule
from celeriac.schedules.entries import EntrySpec, StoredEntry
from celeriac.schedules.firing import new_record
from celeriac.schedules.store import ScheduleStore

UTC = timezone.utc
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: Any, tmp_path: Any) -> Iterator[ScheduleStore]:
    made: ScheduleStore = (MemoryStore() if request.param == "memory"
                           else SQLiteStore(f"sqlite:///{tmp_path / 'beat.sqlite3'}"))
    yield made
    made.close()


def entry(name: str = "e", every: float = 10, **kw: Any) -> StoredEntry:
    spec = EntrySpec(name=name, task="tasks.t", schedule=schedule(every), args=(1,),
                     kwargs={"a": [1, 2]}, options={"queue": "q"})
    return StoredEntry(spec=spec, anchor=T0, **kw)


def fire(store: ScheduleStore, e: StoredEntry, at: datetime, *, manual: bool = False) -> bool:
    return store.claim_fire(new_record(e.spec, at, "node", at, manual=manual), e.version)


def test_insert_get_list_round_trip(store: ScheduleStore) -> None:
    cron = StoredEntry(spec=EntrySpec(name="c", task="tasks.c",
                                      schedule=crontab("*/5", "9-17", "mon-fri"),
                                      missed="all", max_lateness=30.0),
                       anchor=T0, source="code", code_hash="abc")
    assert store.put_entry(entry(), None) and store.put_entry(cron, None)
    got = store.get_entry("c")
    assert got == cron
    assert got.spec.schedule == crontab("*/5", "9-17", "mon-fri")  # type: ignore[union-attr]
    assert [e.name for e in store.list_entries()] == ["c", "e"]
    assert store.get_entry("e") == entry()
    assert store.get_entry("missing") is None


def test_insert_is_refused_when_the_name_exists(store: ScheduleStore) -> None:
    assert store.put_entry(entry(), None)
    assert not store.put_entry(entry(every=5), None)
    assert store.get_entry("e").spec.schedule == schedule(10)  # type: ignore[union-attr]


def test_update_is_compare_and_set_on_version(store: ScheduleStore) -> None:
    store.put_entry(entry(), None)
    gen = store.generation()
    changed = entry(every=5).bumped()
    assert not store.put_entry(changed, expected_version=7)
    assert store.generation() == gen
    assert store.put_entry(changed, expected_version=1)
    assert store.generation() != gen
    got = store.get_entry("e")
    assert got is not None and got.version == 2 and got.spec.schedule == schedule(5)
    assert not store.put_entry(changed.bumped(), expected_version=1)


def test_definition_writes_never_touch_run_state(store: ScheduleStore) -> None:
    e = entry()
    store.put_entry(e, None)
    assert fire(store, e, T0 + timedelta(seconds=10))
    stale = replace(e.bumped(enabled=False), last_run_at=None, total_run_count=0)
    assert store.put_entry(stale, expected_version=1)
    got = store.get_entry("e")
    assert got is not None and not got.enabled
    assert got.last_run_at == T0 + timedelta(seconds=10) and got.total_run_count == 1


def test_delete(store: ScheduleStore) -> None:
    store.put_entry(entry(), None)
    gen = store.generation()
    assert store.delete_entry("e") and not store.delete_entry("e")
    assert store.get_entry("e") is None and store.generation() != gen


def test_claim_is_unique_per_fire_time_and_monotonic(store: ScheduleStore) -> None:
    e = entry()
    store.put_entry(e, None)
    t10, t20 = T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)
    assert fire(store, e, t10)
    assert not fire(store, e, t10), "the same fire time twice"
    assert fire(store, e, t20)
    assert not fire(store, e, t10 + timedelta(seconds=5)), "behind the cursor"
    assert not fire(store, e, T0), "at or before the anchor"
    got = store.get_entry("e")
    assert got is not None and got.last_run_at == t20 and got.total_run_count == 2
    records = store.list_fires("e")
    assert [r.fire_time for r in records] == [t10, t20]
    assert records[0].payload == {"task": "tasks.t", "args": [1], "kwargs": {"a": [1, 2]},
                                  "options": {"queue": "q"}}
    assert records[0].state == "claimed" and records[0].owner == "node"


def test_claim_is_fenced_by_version_and_enabled(store: ScheduleStore) -> None:
    e = entry()
    store.put_entry(e, None)
    store.put_entry(e.bumped(), expected_version=1)
    assert not fire(store, e, T0 + timedelta(seconds=10)), "stale version"
    current = store.get_entry("e")
    assert current is not None and fire(store, current, T0 + timedelta(seconds=10))
    disabled = current.bumped(enabled=False)
    store.put_entry(disabled, expected_version=current.version)
    assert not fire(store, disabled, T0 + timedelta(seconds=20)), "disabled"
    assert not fire(store, entry(name="gone"), T0 + timedelta(seconds=10)), "no such entry"


def test_manual_fire_counts_but_leaves_the_cursor(store: ScheduleStore) -> None:
    e = entry()
    store.put_entry(e, None)
    assert fire(store, e, T0 + timedelta(seconds=3), manual=True)
    got = store.get_entry("e")
    assert got is not None and got.last_run_at is None and got.total_run_count == 1
    assert fire(store, e, T0 + timedelta(seconds=10))
    assert store.list_fires("e")[0].manual


def test_drop_through_moves_the_cursor(store: ScheduleStore) -> None:
    e = entry()
    store.put_entry(e, None)
    t = T0 + timedelta(minutes=5)
    assert store.drop_through("e", 1, t)
    assert not store.drop_through("e", 1, t), "not backwards or equal"
    assert not store.drop_through("e", 2, t + timedelta(seconds=1)), "stale version"
    assert not fire(store, e, t)
    got = store.get_entry("e")
    assert got is not None and got.dropped_through == t and got.cursor() == t


def test_stale_claims_take_over_mark_sent_and_prune(store: ScheduleStore) -> None:
    e = entry()
    store.put_entry(e, None)
    t10 = T0 + timedelta(seconds=10)
    fire(store, e, t10)
    assert store.stale_claims(t10) == []
    [stale] = store.stale_claims(t10 + timedelta(seconds=1))
    later = t10 + timedelta(seconds=40)
    assert store.take_over(stale, "heir", later, t10 + timedelta(seconds=1))
    assert not store.take_over(stale, "other", later, t10 + timedelta(seconds=1)), "once"
    [record] = store.list_fires()
    assert record.owner == "heir" and record.claimed_at == later
    store.mark_sent("e", t10, later)
    assert store.stale_claims(later + timedelta(hours=1)) == []
    [record] = store.list_fires()
    assert record.state == "sent" and record.sent_at == later
    assert store.prune_fires(t10) == 0
    assert store.prune_fires(t10 + timedelta(seconds=1)) == 1
    assert store.list_fires() == []
    assert not fire(store, e, t10), "the cursor still blocks a pruned fire"


def test_leader_lease(store: ScheduleStore) -> None:
    assert store.lease_holder(T0) is None
    assert store.acquire_lease("a", T0, 10)
    assert not store.acquire_lease("b", T0 + timedelta(seconds=5), 10)
    assert store.acquire_lease("a", T0 + timedelta(seconds=5), 10), "renew"
    assert store.lease_holder(T0 + timedelta(seconds=14)) == "a"
    assert not store.acquire_lease("b", T0 + timedelta(seconds=14), 10)
    assert store.acquire_lease("b", T0 + timedelta(seconds=15), 10), "expired"
    store.release_lease("a")
    assert store.lease_holder(T0 + timedelta(seconds=16)) == "b"
    store.release_lease("b")
    assert store.lease_holder(T0 + timedelta(seconds=16)) is None
    assert store.acquire_lease("c", T0 + timedelta(seconds=16), 10)
