"""Missed-run policy (latest / all / skip, max_lateness) and fire identity."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from celeriac.beat.scheduler import Scheduler
from celeriac.brokers.memory.beat_store import MemoryStore
from celeriac.schedules import crontab, schedule
from celeriac.schedules.clock import ManualClock
from celeriac.schedules.entries import EntrySpec, StoredEntry, entry_for_task, spec_from_conf
from celeriac.schedules.policy import (
    describe_skipped,
    fire_task_id,
    max_lateness,
    plan,
    skip_reason,
)

UTC = timezone.utc
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def stored(sched: Any, missed: str = "latest", max_late: float | None = None,
           **kw: Any) -> StoredEntry:
    spec = EntrySpec(name="e", task="t", schedule=sched, missed=missed, max_lateness=max_late)
    return StoredEntry(spec=spec, anchor=T0, **kw)


def minutes(*values: float) -> tuple[datetime, ...]:
    return tuple(T0 + timedelta(minutes=v) for v in values)


def test_on_time_fire_is_sent() -> None:
    decision = plan(stored(schedule(60)), T0 + timedelta(seconds=60.2), UTC)
    assert decision.send == minutes(1) and decision.drop_through is None
    assert decision.next_fire == T0 + timedelta(minutes=2)


def test_latest_sends_only_the_newest_missed_fire() -> None:
    decision = plan(stored(schedule(60)), T0 + timedelta(minutes=10, seconds=30), UTC)
    assert decision.send == minutes(10)
    assert decision.drop_through is None  # claiming 9:10 moves the cursor past 9:01..9:09
    assert decision.skipped == minutes(1, 2, 3, 4, 5, 6, 7, 8, 9)  # ...which are named
    assert decision.unlisted is None
    assert describe_skipped(decision) == ", ".join(m.isoformat() for m in minutes(*range(1, 10)))


def test_on_time_fires_skip_nothing() -> None:
    assert plan(stored(schedule(60)), T0 + timedelta(seconds=60.2), UTC).skipped == ()
    assert plan(stored(schedule(60)), T0 + timedelta(seconds=59), UTC).skipped == ()
    assert plan(stored(schedule(60), missed="all", max_late=300),
                T0 + timedelta(minutes=4, seconds=1), UTC).skipped == ()


def test_every_skipped_fire_is_named_after_a_long_downtime() -> None:
    """An hour down with an every-second entry: 100 named, then a range, then the window."""
    entry = stored(schedule(1))
    now = T0 + timedelta(hours=1, seconds=0.5)
    decision = plan(entry, now, UTC)
    assert decision.send == (T0 + timedelta(hours=1),)
    first = [T0 + timedelta(seconds=k) for k in range(1, 101)]
    assert decision.skipped[:100] == tuple(first)
    window = now - timedelta(seconds=600)  # older fires are past any lateness
    assert decision.unlisted == (first[-1], decision.skipped[100])
    assert decision.skipped[100] > window - timedelta(seconds=1)
    assert decision.skipped[-1] == T0 + timedelta(hours=1, seconds=-1)
    text = describe_skipped(decision)
    assert f"{first[-1].isoformat()}, every fire after {first[-1].isoformat()} and before " \
           f"{decision.skipped[100].isoformat()}, {decision.skipped[100].isoformat()}" in text
    every = [T0 + timedelta(seconds=k) for k in range(1, 3600)]
    listed = set(decision.skipped)
    lo, hi = decision.unlisted
    assert all(f in listed or lo < f < hi for f in every), "every missed fire is covered"


def test_a_skipped_fire_with_nothing_on_time_is_named_and_dropped() -> None:
    decision = plan(stored(schedule(3600)), T0 + timedelta(hours=1, minutes=11), UTC)
    assert decision.send == () and decision.skipped == (T0 + timedelta(hours=1),)
    entry = stored(schedule(60), missed="skip")
    decision = plan(entry, T0 + timedelta(minutes=2, seconds=30), UTC)
    assert decision.skipped == minutes(1, 2) and decision.drop_through is not None
    assert skip_reason(entry, decision, UTC) == "missed='skip' sends only fires at most 5s late"


def test_latest_skips_when_the_newest_is_later_than_the_period() -> None:
    hourly = stored(schedule(3600))
    decision = plan(hourly, T0 + timedelta(hours=1, minutes=11), UTC)
    assert decision.send == () and decision.drop_through is not None
    assert decision.drop_through >= T0 + timedelta(hours=1)


def test_default_lateness_is_the_period_capped_at_ten_minutes() -> None:
    assert max_lateness(stored(schedule(30)), T0, UTC) == 30
    assert max_lateness(stored(schedule(86400)), T0, UTC) == 600
    assert max_lateness(stored(crontab(minute="*/5")), T0, UTC) == 300
    assert max_lateness(stored(crontab(minute=0, hour=0)), T0, UTC) == 600
    assert max_lateness(stored(schedule(86400), max_late=7200), T0, UTC) == 7200
    assert max_lateness(stored(schedule(60), missed="skip"), T0, UTC) == 5


def test_daily_cron_after_downtime() -> None:
    daily = stored(crontab(minute=0, hour=10))
    assert plan(daily, T0 + timedelta(hours=1, minutes=9), UTC).send == minutes(60)
    late = plan(daily, T0 + timedelta(hours=1, minutes=11), UTC)
    assert late.send == () and late.drop_through == T0 + timedelta(hours=1, minutes=11)
    assert plan(stored(crontab(minute=0, hour=10), max_late=3600),
                T0 + timedelta(hours=1, minutes=59), UTC).send == minutes(60)


def test_all_sends_every_fire_within_lateness_in_order() -> None:
    decision = plan(stored(schedule(60), missed="all", max_late=300),
                    T0 + timedelta(minutes=10, seconds=30), UTC)
    assert decision.send == minutes(6, 7, 8, 9, 10)


def test_skip_never_catches_up() -> None:
    entry = stored(schedule(60), missed="skip")
    now = T0 + timedelta(minutes=10, seconds=30)
    decision = plan(entry, now, UTC)
    assert decision.send == () and decision.drop_through == now
    assert plan(entry, T0 + timedelta(minutes=10, seconds=2), UTC).send == minutes(10)


def test_disabled_entries_do_nothing() -> None:
    decision = plan(stored(schedule(1), enabled=False), T0 + timedelta(hours=1), UTC)
    assert decision == (decision.__class__((), None, None))


def test_fire_task_id_is_deterministic() -> None:
    a = fire_task_id("e", T0)
    assert a == fire_task_id("e", T0.astimezone(timezone(timedelta(hours=2))))
    assert a != fire_task_id("e", T0 + timedelta(microseconds=1))
    assert a != fire_task_id("f", T0)


def test_policy_keys_from_conf_and_periodic_task_helper() -> None:
    spec = spec_from_conf("x", {"task": "t", "schedule": 10, "missed": "all",
                                "options": {"max_lateness": timedelta(minutes=2),
                                            "queue": "q"}})
    assert (spec.missed, spec.max_lateness, dict(spec.options)) == ("all", 120.0, {"queue": "q"})
    with pytest.raises(ValueError):
        spec_from_conf("x", {"task": "t", "schedule": 10, "missed": "sometimes"})
    with pytest.raises(ValueError):
        spec_from_conf("x", {"task": "t"})

    class Task:
        name = "app.tasks.report"

    entry = entry_for_task(Task(), crontab(minute=0), {"queue": "reports", "relative": True,
                                                       "missed": "skip"})
    assert entry == {"task": "app.tasks.report", "schedule": crontab(minute=0), "args": (),
                     "kwargs": {}, "relative": True, "missed": "skip",
                     "options": {"queue": "reports"}}


class Conf(dict):
    __getattr__ = dict.get


class RecordingApp:
    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = Conf(conf)
        self.sent: list[tuple[str, str]] = []

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, *, task_id: str,
                  **options: Any) -> str:
        self.sent.append((name, task_id))
        return task_id


def test_all_schedulers_down_ten_minutes_then_restart() -> None:
    """Reliability plan C4: catch-up exactly per policy after a 10-minute outage."""
    conf = {"beat_schedule": {
        "latest-1m": {"task": "latest-1m", "schedule": 60},
        "latest-5m": {"task": "latest-5m", "schedule": crontab(minute="*/5")},
        "latest-hourly": {"task": "latest-hourly", "schedule": crontab(minute=5)},
        "all-1m": {"task": "all-1m", "schedule": 60, "missed": "all", "max_lateness": 900},
        "skip-1m": {"task": "skip-1m", "schedule": 60, "missed": "skip"},
    }}
    clock, store = ManualClock(T0), MemoryStore()
    app = RecordingApp(conf)
    first = Scheduler(app, store, clock=clock, node_id="first")
    first.setup()
    while clock.now() < T0 + timedelta(minutes=3, seconds=1):
        clock.advance(max(first.tick(), 0.1))
    before = len(app.sent)
    assert before == 3 + 3 + 3  # latest-1m, all-1m, skip-1m at 9:01, 9:02, 9:03
    clock.set(T0 + timedelta(minutes=13, seconds=30))  # everyone was down from 9:03 to 9:13:30
    second = Scheduler(app, store, clock=clock, node_id="second")
    second.setup()
    second.tick()
    after = sorted(app.sent[before:])
    ids = dict(after)
    assert sorted(ids) == ["all-1m", "latest-1m", "latest-5m", "latest-hourly"]
    assert sum(1 for name, _ in after if name == "all-1m") == 10  # 9:04 .. 9:13
    assert ids["latest-1m"] == fire_task_id("latest-1m", T0 + timedelta(minutes=13))
    assert ids["latest-5m"] == fire_task_id("latest-5m", T0 + timedelta(minutes=10))
    assert ids["latest-hourly"] == fire_task_id("latest-hourly", T0 + timedelta(minutes=5))
