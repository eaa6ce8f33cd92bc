"""Crontab arithmetic: Celery's field syntax and the next fire time, with the DST rule.

Pure functions only (no app, no clock): :func:`parse_field` expands one crontab
field exactly as Celery's ``crontab_parser`` does (``*``, ``*/15``, ``1-5``,
``1-30/5``, wrap-around ranges ``fri-mon``, lists, day and month names), and
:func:`next_fire` returns the first fire instant strictly after a UTC instant.

DST rule (wall-clock schedules evaluated in an IANA zone):

* an **ambiguous** wall time (fall-back, the hour that happens twice) fires
  once, at its **first** occurrence (``fold=0``);
* a **nonexistent** wall time (spring-forward gap) fires at the **first
  instant after the gap**; several fire times inside one gap, and a fire
  scheduled exactly at the end of the gap, merge into that one fire.

All results are aware UTC datetimes; only UTC instants are stored and compared.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone, tzinfo

UTC = timezone.utc

DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
               "dec")
DAYS_IN_MONTH = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31,
                 11: 30, 12: 31}
#: (max_, min_) per field, as Celery's ``crontab_parser(max_, min_)``.
FIELD_BOUNDS = {
    "minute": (60, 0),
    "hour": (24, 0),
    "day_of_week": (7, 0),
    "day_of_month": (31, 1),
    "month_of_year": (12, 1),
}
#: How far ahead :func:`next_fire` searches before deciding a spec never fires.
SEARCH_YEARS = 30

_RANGE_STEPS = re.compile(r"^(\w+?)-(\w+)/(\w+)?$")
_RANGE = re.compile(r"^(\w+?)-(\w+)$")
_STAR_STEPS = re.compile(r"^\*/(\w+)?$")


class ParseException(ValueError):
    """A crontab field could not be parsed (same name as Celery's)."""


def _number(token: str, max_: int, min_: int) -> int:
    if token.startswith("-"):
        raise ParseException("negative numbers not supported")
    try:
        value = int(token)
    except ValueError:
        abbreviation = token[:3].lower()
        if abbreviation in MONTH_NAMES:
            value = MONTH_NAMES.index(abbreviation) + 1
        elif abbreviation in DAY_NAMES:
            value = DAY_NAMES.index(abbreviation)
        else:
            raise ValueError(f"Invalid weekday literal {token!r}.") from None
    if value > min_ + max_ - 1:
        raise ValueError(f"Invalid end range: {value} > {min_ + max_ - 1}.")
    if value < min_:
        raise ValueError(f"Invalid beginning range: {value} < {min_}.")
    return value


def _expand_range(first: str, last: str | None, max_: int, min_: int) -> list[int]:
    start = _number(first, max_, min_)
    if last is None:
        return [start]
    end = _number(last, max_, min_)
    if end < start:  # wrap around, e.g. fri-mon or 22-2
        return list(range(start, min_ + max_)) + list(range(min_, end + 1))
    return list(range(start, end + 1))


def _step(token: str | None) -> int:
    if not token:
        raise ParseException("empty filter")
    step = int(token)
    if step <= 0:
        raise ParseException(f"step must be positive, got {step}")
    return step


def _parse_part(part: str, max_: int, min_: int) -> list[int]:
    match = _RANGE_STEPS.match(part)
    if match:
        first, last, step = match.groups()
        return _expand_range(first, last, max_, min_)[:: _step(step)]
    match = _RANGE.match(part)
    if match:
        return _expand_range(match.group(1), match.group(2), max_, min_)
    match = _STAR_STEPS.match(part)
    if match:
        return list(range(min_, min_ + max_))[:: _step(match.group(1))]
    if part == "*":
        return list(range(min_, min_ + max_))
    return _expand_range(part, None, max_, min_)


def parse_spec(spec: str, max_: int, min_: int = 0) -> set[int]:
    """Expand a crontab string such as ``'1-30/5,45'`` into the set of values it matches."""
    values: set[int] = set()
    for part in str(spec).split(","):
        part = part.strip()
        if not part:
            raise ParseException("empty part")
        values.update(_parse_part(part, max_, min_))
    return values


def parse_field(spec: int | str | Iterable[int], field: str) -> frozenset[int]:
    """Expand one crontab field (an int, a string, or an iterable of ints)."""
    max_, min_ = FIELD_BOUNDS[field]
    if isinstance(spec, bool):
        raise TypeError(f"Argument cronspec needs to be of any of the following types: "
                        f"int, str, or an iterable type. {type(spec)!r} was given.")
    if isinstance(spec, int):
        values = {spec}
    elif isinstance(spec, str):
        values = parse_spec(spec, max_, min_)
    elif isinstance(spec, Iterable):
        values = {int(v) for v in spec}
    else:
        raise TypeError(f"Argument cronspec needs to be of any of the following types: "
                        f"int, str, or an iterable type. {type(spec)!r} was given.")
    for value in values:
        if value >= max_ + min_ or value < min_:
            raise ValueError(f"Invalid crontab pattern. Valid range is {min_}-"
                             f"{max_ - 1 + min_}. '{value}' was found.")
    return frozenset(values)


def resolve_wall_time(naive: datetime, tz: tzinfo) -> datetime:
    """Map a wall-clock time in ``tz`` to a UTC instant using the DST rule above."""
    first = naive.replace(tzinfo=tz, fold=0)
    instant = first.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == naive:
        return instant  # exists; fold=0 is the first occurrence when ambiguous
    # Nonexistent: zoneinfo applied the pre-gap offset (fold=0) and the post-gap one
    # (fold=1); the transition lies between the two readings. Find it to the second.
    lo = int(naive.replace(tzinfo=tz, fold=1).astimezone(UTC).timestamp())
    hi = int(instant.timestamp())
    post_offset = datetime.fromtimestamp(hi, UTC).astimezone(tz).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(tz).utcoffset() == post_offset:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def _day_matches(day: date, days_of_month: frozenset[int], days_of_week: frozenset[int],
                 months: frozenset[int]) -> bool:
    # Celery ANDs day_of_month and day_of_week (Unix cron ORs them). Sunday is 0.
    return (day.month in months and day.day in days_of_month
            and (day.isoweekday() % 7) in days_of_week)


def next_fire(after: datetime, tz: tzinfo, *, minutes: frozenset[int], hours: frozenset[int],
              days_of_week: frozenset[int], days_of_month: frozenset[int],
              months: frozenset[int]) -> datetime | None:
    """First fire instant (aware UTC) strictly after ``after``, or None if it never fires.

    The wall-time to instant mapping is monotonic, so scanning wall times from
    the local minute of ``after`` and keeping the first instant later than
    ``after`` is exact, including inside repeated and skipped hours.
    """
    after_utc = after.astimezone(UTC)
    start = after_utc.astimezone(tz).replace(tzinfo=None, second=0, microsecond=0)
    sorted_hours, sorted_minutes = sorted(hours), sorted(minutes)
    day = start.date()
    last_day = day + timedelta(days=366 * SEARCH_YEARS)
    while day <= last_day:
        if _day_matches(day, days_of_month, days_of_week, months):
            for hour in sorted_hours:
                if day == start.date() and hour < start.hour:
                    continue
                for minute in sorted_minutes:
                    naive = datetime(day.year, day.month, day.day, hour, minute)
                    if naive < start:
                        continue
                    instant = resolve_wall_time(naive, tz)
                    if instant > after_utc:
                        return instant
        day += timedelta(days=1)
    return None
