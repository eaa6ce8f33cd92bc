"""The DST rule for wall-clock crontabs, in Europe/Paris, America/New_York, Australia/Lord_Howe.

Rule: an ambiguous wall time fires once (first occurrence); a nonexistent one
fires at the first instant after the gap (merged with a fire due then).
Interval schedules are computed in UTC. Fire counts are per local calendar day.
"""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from celeriac.beat.scheduler import Scheduler
from celeriac.brokers.memory.beat_store import MemoryStore
from celeriac.schedules import crontab, schedule
from celeriac.schedules.clock import ManualClock
from celeriac.schedules.cron import resolve_wall_time

UTC = timezone.utc
PARIS, NEW_YORK, LORD_HOWE = (ZoneInfo("Europe/Paris"), ZoneInfo("America/New_York"),
                              ZoneInfo("Australia/Lord_Howe"))
# (zone, spring-forward day, fall-back day) in 2026
DAYS = {
    "paris": (PARIS, date(2026, 3, 29), date(2026, 10, 25)),
    "new_york": (NEW_YORK, date(2026, 3, 8), date(2026, 11, 1)),
    "lord_howe": (LORD_HOWE, date(2026, 10, 4), date(2026, 4, 5)),
}
# expected fires on (spring-forward day, fall-back day) for each crontab
EXPECTED = {
    "paris": {"30 2 * * *": (1, 1), "0 * * * *": (23, 24), "*/15 * * * *": (92, 96),
              "0 0 * * *": (1, 1)},
    "new_york": {"30 2 * * *": (1, 1), "0 * * * *": (23, 24), "*/15 * * * *": (92, 96),
                 "0 0 * * *": (1, 1)},
    # Lord Howe shifts by 30 minutes: 02:00-02:30 is skipped, 01:30-02:00 repeats.
    "lord_howe": {"30 2 * * *": (1, 1), "0 * * * *": (24, 24), "*/15 * * * *": (94, 96),
                  "0 0 * * *": (1, 1)},
}


def fires_on(cron: crontab, tz: ZoneInfo, day: date) -> list[datetime]:
    start = resolve_wall_time(datetime(day.year, day.month, day.day), tz)
    nxt = day + timedelta(days=1)
    end = resolve_wall_time(datetime(nxt.year, nxt.month, nxt.day), tz)
    fires, t = [], start - timedelta(microseconds=1)
    while True:
        fire = cron.next_fire_after(t, tz=tz)
        assert fire is not None
        if fire >= end:
            return fires
        fires.append(fire)
        t = fire


@pytest.mark.parametrize("zone", sorted(DAYS))
@pytest.mark.parametrize("spec", ["30 2 * * *", "0 * * * *", "*/15 * * * *", "0 0 * * *"])
def test_fire_counts_on_dst_days(zone: str, spec: str) -> None:
    tz, spring, fall = DAYS[zone]
    cron = crontab.from_string(spec)
    spring_fires, fall_fires = fires_on(cron, tz, spring), fires_on(cron, tz, fall)
    assert (len(spring_fires), len(fall_fires)) == EXPECTED[zone][spec]
    for fires in (spring_fires, fall_fires):
        assert fires == sorted(set(fires)), "strictly increasing, no double fire"


def test_nonexistent_time_fires_at_end_of_gap() -> None:
    cron = crontab(minute=30, hour=2)
    paris = cron.next_fire_after(datetime(2026, 3, 28, 12, tzinfo=UTC), tz=PARIS)
    assert paris == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST
    new_york = cron.next_fire_after(datetime(2026, 3, 7, 12, tzinfo=UTC), tz=NEW_YORK)
    assert new_york == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT
    quarter_past_two = crontab(minute=15, hour=2)
    lord_howe = quarter_past_two.next_fire_after(datetime(2026, 10, 3, 0, tzinfo=UTC),
                                                 tz=LORD_HOWE)
    assert lord_howe.astimezone(LORD_HOWE).replace(tzinfo=None) == datetime(2026, 10, 4, 2, 30)
    assert lord_howe == datetime(2026, 10, 3, 15, 30, tzinfo=UTC)


def test_ambiguous_time_fires_at_first_occurrence() -> None:
    cron = crontab(minute=30, hour=1)
    new_york = cron.next_fire_after(datetime(2026, 10, 31, 12, tzinfo=UTC), tz=NEW_YORK)
    assert new_york == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT, not EST
    after = cron.next_fire_after(new_york, tz=NEW_YORK)
    assert after == datetime(2026, 11, 2, 6, 30, tzinfo=UTC)
    lord_howe = cron.next_fire_after(datetime(2026, 4, 4, 0, tzinfo=UTC), tz=LORD_HOWE)
    assert lord_howe == datetime(2026, 4, 4, 14, 30, tzinfo=UTC)  # 01:30 +11:00 (first)
    # asked from inside the repeated half hour, it does not fire again that night
    second_pass = datetime(2026, 4, 4, 15, 10, tzinfo=UTC)  # 01:40 +10:30 (second)
    assert cron.next_fire_after(second_pass, tz=LORD_HOWE) == datetime(2026, 4, 5, 15, 0,
                                                                       tzinfo=UTC)


def test_interval_schedules_ignore_dst() -> None:
    hourly = schedule(3600)
    anchor = datetime(2026, 10, 24, 22, tzinfo=UTC)
    fires, t = [], anchor
    for _ in range(30):
        t = hourly.next_fire_after(t, anchor=anchor, tz=PARIS)
        fires.append(t)
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(fires)}
    assert gaps == {3600.0}


class Conf(dict):
    __getattr__ = dict.get


class RecordingApp:
    def __init__(self, conf: dict) -> None:  # type: ignore[type-arg]
        self.conf = Conf(conf)
        self.sent: list[dict] = []  # type: ignore[type-arg]

    def send_task(self, name: str, args=None, kwargs=None, **options):  # type: ignore[no-untyped-def]
        self.sent.append({"name": name, **options})


@pytest.mark.parametrize("zone", sorted(DAYS))
def test_scheduler_over_both_transitions(zone: str) -> None:
    """A scheduler ticking through each transition night sends exactly the expected fires."""
    tz, spring, fall = DAYS[zone]
    for day, index in ((spring, 0), (fall, 1)):
        start = resolve_wall_time(datetime(day.year, day.month, day.day), tz)
        clock = ManualClock(start - timedelta(seconds=1))
        app = RecordingApp({"timezone": str(tz), "beat_fire_retention": 7 * 86400,
                            "beat_lease_seconds": 3600, "beat_max_loop_interval": 900,
                            "beat_schedule": {
            spec: {"task": "t", "schedule": crontab.from_string(spec)}
            for spec in EXPECTED[zone]}})
        sched = Scheduler(app, MemoryStore(), clock=clock, node_id="solo")
        sched.setup()
        end = start + timedelta(hours=25 if index else 24)
        while clock.now() < end:
            clock.advance(max(sched.tick(), 0.5))
        nxt = day + timedelta(days=1)
        day_end = resolve_wall_time(datetime(nxt.year, nxt.month, nxt.day), tz)
        for spec, counts in EXPECTED[zone].items():
            fires = [r for r in sched.store.list_fires(spec) if r.fire_time < day_end]
            assert len(fires) == counts[index], (zone, day, spec)
        assert len({m["task_id"] for m in app.sent}) == len(app.sent)
