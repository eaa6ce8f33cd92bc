"""Date and time helpers users import from Celery's ``celery.utils.time``.

``maybe_make_aware``, ``make_aware``, ``localize``, ``to_utc``, ``is_naive``,
``timezone`` (``.utc``, ``.local``, ``.get_timezone``, ``.to_local``...),
``remaining``, ``delta_resolution``, ``maybe_timedelta``, ``rate``, ``weekday``,
``yearmonth``, ``humanize_seconds``, ``maybe_iso8601``, ``add_seconds_to_datetime``,
``subtract_datetimes``, ``ffwd``, ``utcoffset``, ``adjust_timestamp`` and
``get_exponential_backoff_interval`` behave as Celery 5.7's. Time zones are
:mod:`zoneinfo` zones; a wall time in a DST gap is moved forward by the gap, an
ambiguous one takes its first occurrence (as Celery does with dateutil).
"""

from __future__ import annotations

import calendar
import numbers
import os
import time as _time
from datetime import date, datetime, timedelta, tzinfo
from datetime import timezone as _fixed
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

from ..retry import exponential_backoff

__all__ = ("timezone", "maybe_timedelta", "delta_resolution", "remaining", "rate",
           "weekday", "yearmonth", "humanize_seconds", "maybe_iso8601", "is_naive",
           "add_seconds_to_datetime", "subtract_datetimes", "make_aware", "localize",
           "to_utc", "maybe_make_aware", "ffwd", "utcoffset", "adjust_timestamp",
           "get_exponential_backoff_interval")

DAYNAMES = "sun", "mon", "tue", "wed", "thu", "fri", "sat"
WEEKDAYS = dict(zip(DAYNAMES, range(7), strict=True))
MONTHNAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
              "nov", "dec")
YEARMONTHS = dict(zip(MONTHNAMES, range(1, 13), strict=True))
#: seconds per unit of a rate (``"10/m"``)
RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
TIME_UNITS = (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0), ("second", 1.0))


class _Zone:
    """The ``timezone`` object: UTC and the system's local zone, and conversions."""

    def tz_or_local(self, tzinfo: tzinfo | str | None = None) -> tzinfo:
        return self.local if tzinfo is None else self.get_timezone(tzinfo)

    def to_local(self, dt: datetime, local: tzinfo | str | None = None,
                 orig: tzinfo | None = None) -> datetime:
        if is_naive(dt):
            dt = make_aware(dt, orig or self.utc)
        return localize(dt, self.tz_or_local(local))

    def to_system(self, dt: datetime) -> datetime:
        return dt.astimezone(tz=None)

    def to_local_fallback(self, dt: datetime) -> datetime:
        return make_aware(dt, self.local) if is_naive(dt) else localize(dt, self.local)

    def get_timezone(self, zone: str | tzinfo) -> tzinfo:
        return ZoneInfo(zone) if isinstance(zone, str) else zone

    @cached_property
    def local(self) -> tzinfo:
        """The system's zone: ``$TZ`` or /etc/localtime by name when known, else its
        current fixed offset."""
        name = os.environ.get("TZ", "").lstrip(":")
        try:
            if name:
                return ZoneInfo(name)
            with open("/etc/localtime", "rb") as fh:
                return ZoneInfo.from_file(fh, key="localtime")
        except Exception:
            local = datetime.now().astimezone().tzinfo
            return local if local is not None else self.utc

    @cached_property
    def utc(self) -> tzinfo:
        return ZoneInfo("UTC")


timezone = _Zone()


def maybe_timedelta(delta: Any) -> Any:
    """Seconds (a number) as a timedelta; anything else unchanged."""
    return timedelta(seconds=float(delta)) if isinstance(delta, numbers.Real) else delta


def delta_resolution(dt: datetime, delta: timedelta) -> datetime:
    """``dt`` rounded down to the unit of ``delta``: days, hours, minutes, else as is."""
    seconds = max(delta.total_seconds(), 0)
    if seconds >= 86400:
        return dt.replace(hour=0, minute=0, second=0, microsecond=0)
    if seconds >= 3600:
        return dt.replace(minute=0, second=0, microsecond=0)
    if seconds >= 60:
        return dt.replace(second=0, microsecond=0)
    return dt


def remaining(start: datetime, ends_in: timedelta | ffwd, now: datetime | None = None,
              relative: bool = False) -> timedelta:
    """Time left until ``start + ends_in`` (elapsed time for a timedelta shorter than a
    day or not relative, calendar days otherwise); ``relative`` rounds the end down to
    the unit of ``ends_in``, never to ``start`` or before."""
    now = now or datetime.now(_fixed.utc)
    if isinstance(ends_in, timedelta) and not (relative and ends_in >= timedelta(days=1)):
        end = add_seconds_to_datetime(start, ends_in.total_seconds())
    else:
        end = start + ends_in
    if relative and isinstance(ends_in, timedelta):
        rounded = _resolve(delta_resolution(end, ends_in).replace(microsecond=0))
        if _utc(rounded) > _utc(start):
            end = rounded
    return _utc(end) - _utc(now)


def rate(r: Any) -> float:
    """Tasks per second of a rate: ``"100/m"``, ``"2/h"``, ``"0.5/s"`` or a number."""
    if not r:
        return 0
    if isinstance(r, str):
        ops, _, unit = r.partition("/")
        return float(ops) / RATE_UNITS[unit or "s"] or 0
    return float(r) or 0


def weekday(name: str) -> int:
    """0 (Sunday) to 6 for a day name or its first three letters."""
    try:
        return WEEKDAYS[name[:3].lower()]
    except KeyError:
        raise KeyError(name) from None


def yearmonth(name: str) -> int:
    """1 (January) to 12 for a month name or its first three letters."""
    try:
        return YEARMONTHS[name[:3].lower()]
    except KeyError:
        raise KeyError(name) from None


def humanize_seconds(secs: float, prefix: str = "", sep: str = "", now: str = "now",
                     microseconds: bool = False) -> str:
    """``60`` -> ``"1.00 minute"``, ``7200`` -> ``"2.00 hours"``; ``now`` for 0."""
    secs = float(format(float(secs), ".2f"))
    for unit, divider in TIME_UNITS:
        if secs >= divider:
            value = secs / divider
            return f"{prefix}{sep}{value:.2f} {unit if value == 1 else unit + 's'}"
    if microseconds and secs > 0.0:
        return f"{prefix}{sep}{secs:.2f} seconds"
    return now


def maybe_iso8601(dt: datetime | str | None) -> datetime | None:
    """An ISO 8601 text as a datetime; a datetime as is; None for nothing."""
    if not dt:
        return None
    if isinstance(dt, datetime):
        return dt
    return datetime.fromisoformat(dt[:-1] + "+00:00" if dt.endswith(("Z", "z")) else dt)


def is_naive(dt: datetime) -> bool:
    return dt.tzinfo is None or dt.tzinfo.utcoffset(dt) is None


def add_seconds_to_datetime(dt: datetime, seconds: float) -> datetime:
    """``dt`` plus elapsed seconds (across a DST change too); naive stays naive."""
    if is_naive(dt):
        return dt + timedelta(seconds=seconds)
    return (dt.astimezone(_fixed.utc) + timedelta(seconds=seconds)).astimezone(dt.tzinfo)


def subtract_datetimes(end: datetime, start: datetime) -> timedelta:
    """Elapsed time from ``start`` to ``end``; naive datetimes are UTC."""
    return _utc(maybe_make_aware(end)) - _utc(maybe_make_aware(start))


def make_aware(dt: datetime, tz: tzinfo) -> datetime:
    """``dt`` in ``tz``: a wall time in a DST gap moves forward by the gap, an ambiguous
    one is its first occurrence."""
    return _resolve(dt.replace(tzinfo=tz, fold=0))


def localize(dt: datetime, tz: tzinfo) -> datetime:
    """An aware datetime converted to ``tz`` when it is in UTC; a naive one made aware."""
    if is_naive(dt):
        dt = make_aware(dt, tz)
    if dt.tzinfo == ZoneInfo("UTC") or dt.tzinfo is _fixed.utc:
        dt = dt.astimezone(tz)
    return dt


def to_utc(dt: datetime) -> datetime:
    return make_aware(dt, timezone.utc)


def maybe_make_aware(dt: datetime, tz: tzinfo | str | None = None,
                     naive_as_utc: bool = True) -> datetime:
    """An aware datetime as is; a naive one taken as UTC (or ``tz`` with
    ``naive_as_utc=False``) and placed in ``tz`` (UTC by default)."""
    if not is_naive(dt):
        return dt
    if naive_as_utc:
        dt = to_utc(dt)
    return localize(dt, timezone.utc if tz is None else timezone.tz_or_local(tz))


class ffwd:
    """A ``dateutil.relativedelta`` that only adds: fields replace, ``weeks`` and
    ``weekday`` move forward."""

    def __init__(self, year: int | None = None, month: int | None = None, weeks: int = 0,
                 weekday: int | None = None, day: int | None = None, hour: int | None = None,
                 minute: int | None = None, second: int | None = None,
                 microsecond: int | None = None, **kwargs: Any) -> None:
        self.year, self.month, self.weeks, self.weekday = year, month, weeks, weekday
        self.day, self.hour, self.minute, self.second = day, hour, minute, second
        self.microsecond = microsecond
        self.days = weeks * 7

    def _fields(self) -> dict[str, int]:
        fields = {"year": self.year, "month": self.month, "day": self.day, "hour": self.hour,
                  "minute": self.minute, "second": self.second,
                  "microsecond": self.microsecond}
        return {k: v for k, v in fields.items() if v is not None}

    def __repr__(self) -> str:
        shown = {**self._fields(), "weeks": self.weeks, "weekday": self.weekday}
        return "ffwd(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    def __radd__(self, other: Any) -> Any:
        if not isinstance(other, date):
            return NotImplemented
        year, month = self.year or other.year, self.month or other.month
        day = min(calendar.monthrange(year, month)[1], self.day or other.day)
        moved = other.replace(**{**self._fields(), "year": year, "month": month, "day": day})
        if self.weekday is not None:
            moved += timedelta(days=(7 - moved.weekday() + self.weekday) % 7)
        return moved + timedelta(days=self.days)


def utcoffset(time: Any = _time, localtime: Any = _time.localtime) -> int:
    """The local zone's offset to UTC in hours, west positive (``time.timezone``)."""
    return int((time.altzone if localtime().tm_isdst else time.timezone) // 3600)


def adjust_timestamp(ts: float, offset: int, here: Any = utcoffset) -> float:
    """A timestamp taken where the offset is ``offset`` hours, adjusted to here."""
    return ts - (offset - here()) * 3600


def get_exponential_backoff_interval(factor: float, retries: int, maximum: float,
                                     full_jitter: bool = False) -> float:
    """``factor * 2 ** retries`` capped at ``maximum``; a random part of it with
    ``full_jitter`` (what ``retry_backoff`` waits)."""
    return exponential_backoff(factor, retries, maximum, full_jitter=full_jitter)


def _utc(dt: datetime) -> datetime:
    return dt.astimezone(_fixed.utc) if not is_naive(dt) else dt.replace(tzinfo=_fixed.utc)


def _resolve(dt: datetime) -> datetime:
    """A wall time that does not exist (DST gap) moved forward by the gap."""
    if is_naive(dt) or not isinstance(dt.tzinfo, ZoneInfo):
        return dt
    back = dt.astimezone(_fixed.utc).astimezone(dt.tzinfo)
    if back.replace(tzinfo=None, fold=0) == dt.replace(tzinfo=None, fold=0):
        return dt
    before, after = dt.replace(fold=0).utcoffset(), dt.replace(fold=1).utcoffset()
    if before is None or after is None:
        return dt
    return (dt + abs(before - after)).replace(fold=0)
