"""Celery-compatible schedules: ``schedule``, ``crontab``, ``schedstate``, ``maybe_schedule``.

Mirrors ``celery.schedules`` for user code (``from celeriac.schedules import crontab``).
Every schedule also exposes the pure method the beat scheduler uses,
``next_fire_after(instant, anchor=..., tz=...)``, which returns the first fire
instant (aware UTC) strictly after ``instant``. Interval schedules are computed
in UTC on a grid anchored at the entry's anchor; crontabs are evaluated in the
app's time zone with the DST rule documented in :mod:`celeriac.schedules.cron`.

``solar`` fires at sunrise, sunset, dawn, dusk or solar noon at a place, with
Celery's event names and semantics, computed with NOAA's equations
(:mod:`celeriac.schedules.sun`; no ``ephem`` needed).
"""

from __future__ import annotations

import math
from collections import namedtuple
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from .. import clock
from ..utils.time import delta_resolution
from . import cron
from .cron import ParseException
from .sun import EVENTS, next_event

__all__ = ["BaseSchedule", "ParseException", "crontab", "crontab_parser", "maybe_schedule",
           "schedstate", "schedule", "solar"]

UTC = timezone.utc
Cronspec = int | str | Iterable[int]

schedstate = namedtuple("schedstate", ("is_due", "next"))


def app_timezone(app: Any) -> tzinfo:
    """The zone crontabs are evaluated in: ``timezone``, else UTC (or local if not enable_utc)."""
    conf = getattr(app, "conf", None)
    name = conf.get("timezone") if conf is not None else None
    if isinstance(name, tzinfo):
        return name
    if name:
        return ZoneInfo(str(name))
    if conf is not None and conf.get("enable_utc", True) is False:
        local = datetime.now().astimezone().tzinfo
        return local if local is not None else UTC
    return UTC


def maybe_make_aware(dt: datetime, tz: tzinfo = UTC) -> datetime:
    """Treat a naive datetime as being in ``tz`` (UTC by default), as Celery does."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=tz)


class BaseSchedule:
    """Base of all schedules: ``now()``, ``tz``, ``is_due`` and ``remaining_estimate``."""

    def __init__(self, nowfun: Callable[[], datetime] | None = None, app: Any = None) -> None:
        self.nowfun = nowfun
        self._app = app

    @property
    def app(self) -> Any:
        return self._app

    @app.setter
    def app(self, app: Any) -> None:
        self._app = app

    @property
    def tz(self) -> tzinfo:
        return app_timezone(self._app)

    def now(self) -> datetime:
        return maybe_make_aware(self.nowfun()) if self.nowfun else clock.now()

    def maybe_make_aware(self, dt: datetime) -> datetime:
        return maybe_make_aware(dt)

    def next_fire_after(self, instant: datetime, *, anchor: datetime | None = None,
                        tz: tzinfo | None = None) -> datetime | None:
        raise NotImplementedError

    def period_at(self, fire: datetime, *, anchor: datetime | None = None,
                  tz: tzinfo | None = None) -> float:
        """Seconds from ``fire`` to the following fire (the missed-run bound uses it)."""
        following = self.next_fire_after(fire, anchor=anchor, tz=tz)
        return (following - fire).total_seconds() if following else math.inf

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        last = maybe_make_aware(last_run_at)
        following = self.next_fire_after(last, anchor=last, tz=self.tz)
        if following is None:
            return timedelta.max
        return following - self.now()

    def is_due(self, last_run_at: datetime) -> schedstate:
        """``(True, seconds to next check)`` when a fire is due since ``last_run_at``."""
        remaining_s = max(self.remaining_estimate(last_run_at).total_seconds(), 0)
        if remaining_s == 0:
            now = self.now()
            following = self.next_fire_after(now, anchor=now, tz=self.tz)
            ahead = (following - now).total_seconds() if following else math.inf
            return schedstate(is_due=True, next=ahead)
        return schedstate(is_due=False, next=remaining_s)

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError


def _resolution_floor(instant: datetime, run_every: timedelta) -> datetime:
    """Round down to the resolution of ``run_every`` (Celery's ``delta_resolution``),
    whole seconds at least."""
    return delta_resolution(instant, run_every).replace(microsecond=0)


class schedule(BaseSchedule):
    """Run every ``run_every`` (seconds or a timedelta), computed in UTC.

    With ``relative=True`` the grid is aligned to the interval's resolution
    (a 1-hour interval fires on the hour), as Celery's ``relative`` flag does.
    """

    def __init__(self, run_every: float | timedelta | None = None, relative: bool = False,
                 nowfun: Callable[[], datetime] | None = None, app: Any = None) -> None:
        if run_every is None:
            raise ValueError("schedule: run_every is required")
        self.run_every = run_every if isinstance(run_every, timedelta) else timedelta(
            seconds=float(run_every))
        if self.run_every.total_seconds() <= 0:
            raise ValueError(f"schedule: run_every must be positive, got {run_every!r}")
        self.relative = relative
        super().__init__(nowfun=nowfun, app=app)

    @property
    def seconds(self) -> float:
        return self.run_every.total_seconds()

    @property
    def human_seconds(self) -> str:
        return f"{self.seconds:g} seconds"

    def next_fire_after(self, instant: datetime, *, anchor: datetime | None = None,
                        tz: tzinfo | None = None) -> datetime:
        instant = maybe_make_aware(instant).astimezone(UTC)
        base = maybe_make_aware(anchor).astimezone(UTC) if anchor else instant
        if self.relative:
            base = _resolution_floor(base, self.run_every)
        period_us = self.run_every // timedelta(microseconds=1)
        elapsed_us = (instant - base) // timedelta(microseconds=1)
        steps = max(elapsed_us // period_us + 1, 1)
        return base + timedelta(microseconds=steps * period_us)

    def period_at(self, fire: datetime, *, anchor: datetime | None = None,
                  tz: tzinfo | None = None) -> float:
        return self.seconds

    def to_json(self) -> dict[str, Any]:
        return {"type": "interval", "seconds": self.seconds, "relative": self.relative}

    def __repr__(self) -> str:
        return f"<freq: {self.human_seconds}>"

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, schedule):
            return self.run_every == other.run_every and self.relative == other.relative
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("schedule", self.run_every, self.relative))


class crontab_parser:
    """Celery's ``crontab_parser(max_, min_).parse(spec) -> set[int]``."""

    ParseException = ParseException

    def __init__(self, max_: int = 60, min_: int = 0) -> None:
        self.max_, self.min_ = max_, min_

    def parse(self, spec: str) -> set[int]:
        return cron.parse_spec(spec, self.max_, self.min_)


def _field_text(spec: Cronspec) -> str:
    if isinstance(spec, (int, str)):
        return str(spec)
    return ",".join(str(v) for v in sorted(spec))


class crontab(BaseSchedule):
    """Cron-like schedule in the app time zone; day_of_month and day_of_week are ANDed."""

    def __init__(self, minute: Cronspec = "*", hour: Cronspec = "*",
                 day_of_week: Cronspec = "*", day_of_month: Cronspec = "*",
                 month_of_year: Cronspec = "*", nowfun: Callable[[], datetime] | None = None,
                 app: Any = None) -> None:
        self._orig_minute, self._orig_hour = minute, hour
        self._orig_day_of_week, self._orig_day_of_month = day_of_week, day_of_month
        self._orig_month_of_year = month_of_year
        self.minute = cron.parse_field(minute, "minute")
        self.hour = cron.parse_field(hour, "hour")
        self.day_of_week = cron.parse_field(day_of_week, "day_of_week")
        self.day_of_month = cron.parse_field(day_of_month, "day_of_month")
        self.month_of_year = cron.parse_field(month_of_year, "month_of_year")
        if not any(day <= cron.DAYS_IN_MONTH[month]
                   for month in self.month_of_year for day in self.day_of_month):
            raise ValueError(f"Invalid crontab: day_of_month={day_of_month!r} never occurs in "
                             f"month_of_year={month_of_year!r}")
        super().__init__(nowfun=nowfun, app=app)

    @classmethod
    def from_string(cls, spec: str) -> crontab:
        """``crontab.from_string('*/5 * * * *')``: minute hour day-of-month month day-of-week."""
        fields = spec.split()
        if len(fields) != 5:
            raise ValueError(f"crontab.from_string: expected 5 fields, got {spec!r}")
        minute, hour, day_of_month, month_of_year, day_of_week = fields
        return cls(minute, hour, day_of_week, day_of_month, month_of_year)

    def next_fire_after(self, instant: datetime, *, anchor: datetime | None = None,
                        tz: tzinfo | None = None) -> datetime | None:
        return cron.next_fire(
            maybe_make_aware(instant), tz or self.tz, minutes=self.minute, hours=self.hour,
            days_of_week=self.day_of_week, days_of_month=self.day_of_month,
            months=self.month_of_year)

    def remaining_delta(self, last_run_at: datetime,
                        tz: tzinfo | None = None) -> tuple[datetime, timedelta, datetime]:
        """``(last_run_at, delta to the next fire, now)`` as Celery's ``remaining_delta``."""
        last = maybe_make_aware(last_run_at)
        following = self.next_fire_after(last, tz=tz)
        delta = (following - last) if following else timedelta.max
        return last, delta, self.now()

    def is_due(self, last_run_at: datetime) -> schedstate:
        state = super().is_due(last_run_at)
        deadline = None
        if self._app is not None:
            deadline = self._app.conf.get("beat_cron_starting_deadline")
        if not state.is_due or deadline is None:
            return state
        # beat_cron_starting_deadline: do not catch up a run older than the deadline.
        now = self.now()
        since = now - timedelta(seconds=float(deadline), microseconds=1)
        latest = self.next_fire_after(max(maybe_make_aware(last_run_at), since))
        if latest is None or latest > now:
            return schedstate(is_due=False, next=state.next)
        return state

    def to_json(self) -> dict[str, Any]:
        return {"type": "crontab", "minute": _field_text(self._orig_minute),
                "hour": _field_text(self._orig_hour),
                "day_of_week": _field_text(self._orig_day_of_week),
                "day_of_month": _field_text(self._orig_day_of_month),
                "month_of_year": _field_text(self._orig_month_of_year)}

    def __repr__(self) -> str:
        j = self.to_json()
        return (f"<crontab: {j['minute']} {j['hour']} {j['day_of_week']} "
                f"{j['day_of_month']} {j['month_of_year']} (m/h/dM/MY/d)>")

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, crontab):
            return (self.minute, self.hour, self.day_of_week, self.day_of_month,
                    self.month_of_year) == (other.minute, other.hour, other.day_of_week,
                                            other.day_of_month, other.month_of_year)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.minute, self.hour, self.day_of_week, self.day_of_month,
                     self.month_of_year))


class solar(BaseSchedule):
    """Fire at a solar ``event`` at latitude ``lat``, longitude ``lon`` (Celery's ``solar``).

    Events: ``dawn_astronomical``, ``dawn_nautical``, ``dawn_civil``, ``sunrise``,
    ``solar_noon``, ``sunset``, ``dusk_civil``, ``dusk_nautical``,
    ``dusk_astronomical``. Days on which the event does not happen (polar day or
    night) are skipped.
    """

    def __init__(self, event: str, lat: float, lon: float,
                 nowfun: Callable[[], datetime] | None = None, app: Any = None) -> None:
        if event not in EVENTS:
            raise ValueError(f"solar: unknown event {event!r} (one of {', '.join(EVENTS)})")
        lat, lon = float(lat), float(lon)
        if not -90 <= lat <= 90:
            raise ValueError(f"solar: latitude {lat} is outside -90..90")
        if not -180 <= lon <= 180:
            raise ValueError(f"solar: longitude {lon} is outside -180..180")
        self.event, self.lat, self.lon = event, lat, lon
        super().__init__(nowfun=nowfun, app=app)

    def next_fire_after(self, instant: datetime, *, anchor: datetime | None = None,
                        tz: tzinfo | None = None) -> datetime | None:
        return next_event(maybe_make_aware(instant), self.event, self.lat, self.lon)

    def to_json(self) -> dict[str, Any]:
        return {"type": "solar", "event": self.event, "lat": self.lat, "lon": self.lon}

    def __repr__(self) -> str:
        return f"<solar: {self.event} at latitude {self.lat}, longitude: {self.lon}>"

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, solar):
            return (self.event, self.lat, self.lon) == (other.event, other.lat, other.lon)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("solar", self.event, self.lat, self.lon))


def maybe_schedule(s: float | timedelta | BaseSchedule | None, relative: bool = False,
                   app: Any = None) -> BaseSchedule | None:
    """Return a schedule from a number of seconds, a timedelta, or a schedule."""
    if s is None:
        return None
    if isinstance(s, (int, float)) and not isinstance(s, bool):
        s = timedelta(seconds=s)
    if isinstance(s, timedelta):
        return schedule(s, relative, app=app)
    if isinstance(s, BaseSchedule):
        if app is not None:
            s.app = app
        return s
    raise TypeError(f"not a schedule: {s!r} (use seconds, a timedelta, schedule or crontab)")


def schedule_from_json(data: dict[str, Any], app: Any = None) -> BaseSchedule:
    """Inverse of ``to_json``: ``{"type": "interval"|"crontab"|"solar", ...}``."""
    kind = data.get("type")
    if kind == "interval":
        return schedule(timedelta(seconds=float(data["seconds"])),
                        bool(data.get("relative", False)), app=app)
    if kind == "crontab":
        return crontab(minute=data.get("minute", "*"), hour=data.get("hour", "*"),
                       day_of_week=data.get("day_of_week", "*"),
                       day_of_month=data.get("day_of_month", "*"),
                       month_of_year=data.get("month_of_year", "*"), app=app)
    if kind == "solar":
        return solar(str(data["event"]), float(data["lat"]), float(data["lon"]), app=app)
    raise ValueError(f"unknown schedule type {kind!r} in {data!r}")
