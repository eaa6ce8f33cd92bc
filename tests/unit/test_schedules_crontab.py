"""celeriac.schedules: crontab syntax, Celery parity, is_due/remaining_estimate, intervals."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from celery.schedules import crontab as celery_crontab

from celeriac.schedules import (
    ParseException,
    crontab,
    crontab_parser,
    maybe_schedule,
    schedstate,
    schedule,
    schedule_from_json,
)

UTC = timezone.utc


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(("spec", "max_", "min_", "expected"), [
    ("*/15", 60, 0, {0, 15, 30, 45}),
    ("1-5", 60, 0, {1, 2, 3, 4, 5}),
    ("1-30/5", 60, 0, {1, 6, 11, 16, 21, 26}),
    ("1,3,5", 60, 0, {1, 3, 5}),
    ("0-10/2,45", 60, 0, {0, 2, 4, 6, 8, 10, 45}),
    ("mon-fri", 7, 0, {1, 2, 3, 4, 5}),
    ("sun", 7, 0, {0}),
    ("sunday,saturday", 7, 0, {0, 6}),
    ("fri-mon", 7, 0, {5, 6, 0, 1}),
    ("22-2", 24, 0, {22, 23, 0, 1, 2}),
    ("jan-mar", 12, 1, {1, 2, 3}),
    ("*/2", 12, 1, {1, 3, 5, 7, 9, 11}),
    ("2-12/2", 12, 1, {2, 4, 6, 8, 10, 12}),
    ("*/3", 31, 1, {1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31}),
    ("*", 7, 0, set(range(7))),
])
def test_parser_matches_celery_grammar(spec: str, max_: int, min_: int,
                                       expected: set[int]) -> None:
    assert crontab_parser(max_, min_).parse(spec) == expected


@pytest.mark.parametrize("spec", ["", "1,,2", "*/", "1-5/", "-1", "60", "foo", "*/0"])
def test_parser_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(ValueError):
        crontab_parser(60).parse(spec)


def test_parse_exception_is_a_value_error() -> None:
    with pytest.raises(ParseException):
        crontab_parser(60).parse("1,,2")


def test_field_types_and_range_checks() -> None:
    c = crontab(minute=[0, 30], hour={9, 17}, day_of_week=1)
    assert c.minute == {0, 30} and c.hour == {9, 17} and c.day_of_week == {1}
    with pytest.raises(ValueError):
        crontab(minute=60)
    with pytest.raises(ValueError):
        crontab(day_of_month=0)
    with pytest.raises(ValueError):
        crontab(day_of_month=31, month_of_year="feb")
    with pytest.raises(TypeError):
        crontab(minute=1.5)  # type: ignore[arg-type]


def test_day_of_month_and_day_of_week_are_anded() -> None:
    friday_13 = crontab(0, 0, day_of_month="13", day_of_week="fri")
    assert friday_13.next_fire_after(at(2026, 1, 1)) == at(2026, 2, 13)
    assert friday_13.next_fire_after(at(2026, 2, 13)) == at(2026, 3, 13)


def test_from_string_field_order() -> None:
    c = crontab.from_string("*/5 9-17 1 jan-jun mon-fri")
    assert c == crontab(minute="*/5", hour="9-17", day_of_month="1",
                        month_of_year="jan-jun", day_of_week="mon-fri")
    with pytest.raises(ValueError):
        crontab.from_string("* * *")


SPECS = ["*", "*/15", "0", "7,37", "0-10/2", "30"]
HOURS = ["*", "9-17", "0", "*/4", "22-2"]
DOWS = ["*", "mon-fri", "sun", "fri-mon", "3"]
DOMS = ["*", "1", "13", "1-7", "*/10", "31"]
MONTHS = ["*", "jan-mar", "2", "*/3", "dec"]


def test_next_fire_matches_celery_for_random_specs() -> None:
    rng = random.Random(20261121)
    for _ in range(300):
        fields = dict(minute=rng.choice(SPECS), hour=rng.choice(HOURS),
                      day_of_week=rng.choice(DOWS), day_of_month=rng.choice(DOMS),
                      month_of_year=rng.choice(MONTHS))
        try:
            ours = crontab(**fields)
        except ValueError:
            continue  # e.g. day 31 in February only
        last = at(2026, 1, 1) + timedelta(seconds=rng.randrange(0, 365 * 86400))
        theirs = celery_crontab(**fields)
        theirs.nowfun = lambda last=last: last
        expected = last + theirs.remaining_estimate(last)
        assert ours.next_fire_after(last) == expected, (fields, last)


def test_crontab_is_due_and_remaining_estimate() -> None:
    now = at(2026, 3, 2, 10, 0, 30)
    every_5 = crontab(minute="*/5", nowfun=lambda: now)
    assert every_5.remaining_estimate(at(2026, 3, 2, 9, 58)) == timedelta(seconds=-30)
    due = every_5.is_due(at(2026, 3, 2, 9, 58))
    assert isinstance(due, schedstate)
    assert due == (True, 270.0)
    assert every_5.is_due(at(2026, 3, 2, 10, 0)) == (False, 270.0)


def test_crontab_starting_deadline_skips_stale_runs() -> None:
    class App:
        conf = {"beat_cron_starting_deadline": 60}

    now = at(2026, 3, 2, 10, 30)
    hourly = crontab(minute=0, nowfun=lambda: now, app=App())
    assert hourly.is_due(at(2026, 3, 2, 9, 0)).is_due is False
    assert crontab(minute=0, nowfun=lambda: now).is_due(at(2026, 3, 2, 9, 0)).is_due is True


def test_interval_schedule_like_celery() -> None:
    now = at(2026, 3, 2, 10, 0, 0)
    every_10 = schedule(timedelta(seconds=10), nowfun=lambda: now)
    assert every_10.seconds == 10
    assert every_10.is_due(now - timedelta(seconds=10)) == (True, 10)
    assert every_10.is_due(now - timedelta(seconds=4)) == (False, 6)
    assert every_10.remaining_estimate(now - timedelta(seconds=4)) == timedelta(seconds=6)


def test_interval_grid_is_anchored() -> None:
    anchor = at(2026, 3, 2, 10, 0, 3)
    every_10 = schedule(10)
    assert every_10.next_fire_after(anchor, anchor=anchor) == at(2026, 3, 2, 10, 0, 13)
    assert every_10.next_fire_after(at(2026, 3, 2, 10, 0, 20), anchor=anchor) == at(
        2026, 3, 2, 10, 0, 23)
    hourly = schedule(3600, relative=True)
    assert hourly.next_fire_after(anchor, anchor=anchor) == at(2026, 3, 2, 11)


def test_maybe_schedule_accepts_numbers_timedeltas_and_schedules() -> None:
    assert maybe_schedule(10) == schedule(10)
    assert maybe_schedule(2.5) == schedule(timedelta(seconds=2.5))
    assert maybe_schedule(timedelta(minutes=1)) == schedule(60)
    cron = crontab(minute=0)
    assert maybe_schedule(cron) is cron
    assert maybe_schedule(None) is None
    with pytest.raises(TypeError):
        maybe_schedule("10")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        schedule(0)


@pytest.mark.parametrize("sched", [
    schedule(10), schedule(3600, relative=True),
    crontab("*/15", "9-17", "mon-fri"), crontab.from_string("0 4 1 */3 *"),
    crontab(minute=[5, 35], hour=3),
])
def test_json_round_trip(sched) -> None:  # type: ignore[no-untyped-def]
    again = schedule_from_json(sched.to_json())
    assert again == sched
    start = at(2026, 5, 5, 5, 5)
    assert again.next_fire_after(start, anchor=start) == sched.next_fire_after(start,
                                                                               anchor=start)
