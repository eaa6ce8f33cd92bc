"""The schedule kinds of django-celery-beat's models, and crontabs in words.

* :class:`TzAwareCrontab`: a crontab evaluated in its own time zone (a
  ``CrontabSchedule`` row's ``timezone``) instead of the app's;
* :class:`clocked`: one fire at a given instant (a ``ClockedSchedule`` row);
* :func:`crontab_in_words`: "At 07:30, on Monday" for the admin.

Both schedules speak celeriac's pure ``next_fire_after`` so the fire-time
claims of :mod:`celeriac.beat` apply to them unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from celeriac.schedules import BaseSchedule, cron, crontab, maybe_make_aware

UTC = timezone.utc


class TzAwareCrontab(crontab):
    """A crontab whose fields are read in ``tz`` (an IANA name or tzinfo)."""

    def __init__(self, minute: Any = "*", hour: Any = "*", day_of_week: Any = "*",
                 day_of_month: Any = "*", month_of_year: Any = "*", *, tz: Any = "UTC",
                 **kwargs: Any) -> None:
        super().__init__(minute, hour, day_of_week, day_of_month, month_of_year, **kwargs)
        self.zone: tzinfo = tz if isinstance(tz, tzinfo) else ZoneInfo(str(tz or "UTC"))

    def next_fire_after(self, instant: datetime, *, anchor: datetime | None = None,
                        tz: tzinfo | None = None) -> datetime | None:
        return super().next_fire_after(instant, anchor=anchor, tz=self.zone)

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "timezone": str(self.zone)}

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]} {self.zone}>"

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, TzAwareCrontab):
            return super().__eq__(other) and str(self.zone) == str(other.zone)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((super().__hash__(), str(self.zone)))


class clocked(BaseSchedule):
    """Fire once, at ``clocked_time`` (django-celery-beat's one-off clocked schedule)."""

    def __init__(self, clocked_time: datetime, nowfun: Any = None, app: Any = None) -> None:
        self.clocked_time = maybe_make_aware(clocked_time).astimezone(UTC)
        super().__init__(nowfun=nowfun, app=app)

    def next_fire_after(self, instant: datetime, *, anchor: datetime | None = None,
                        tz: tzinfo | None = None) -> datetime | None:
        return self.clocked_time if self.clocked_time > maybe_make_aware(instant) else None

    def period_at(self, fire: datetime, *, anchor: datetime | None = None,
                  tz: tzinfo | None = None) -> float:
        return 600.0  # a clocked fire may run up to ten minutes late (beat's default bound)

    def to_json(self) -> dict[str, Any]:
        return {"type": "clocked", "clocked_time": self.clocked_time.isoformat()}

    def __repr__(self) -> str:
        return f"<clocked: {self.clocked_time}>"

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, clocked):
            return self.clocked_time == other.clocked_time
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("clocked", self.clocked_time))


_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")


def _runs(values: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for value in values:
        if runs and runs[-1][1] == value - 1:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    return runs


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _list(values: Iterable[int], name: Any) -> str:
    pieces = []
    for start, end in _runs(sorted(values)):
        if start == end:
            pieces.append(name(start))
        elif end == start + 1:
            pieces.extend([name(start), name(end)])
        else:
            pieces.append(f"{name(start)} through {name(end)}")
    return _join(pieces)


def _step(values: Iterable[int], low: int, high: int) -> int | None:
    """The step ``n`` when ``values`` is ``low, low+n, ...`` up to the field's end."""
    ordered = sorted(values)
    if len(ordered) < 2 or ordered[0] != low:
        return None
    step = ordered[1] - ordered[0]
    return step if ordered == list(range(low, high + 1, step)) else None


def crontab_in_words(minute: str, hour: str, day_of_month: str, month_of_year: str,
                     day_of_week: str) -> str:
    """English for a crontab ("At 07:30, on Monday"); the fields as Celery parses them."""
    fields = {name: cron.parse_field(value, name) for name, value in (
        ("minute", minute), ("hour", hour), ("day_of_month", day_of_month),
        ("month_of_year", month_of_year), ("day_of_week", day_of_week))}
    minutes, hours = fields["minute"], fields["hour"]
    every_hour, every_minute = len(hours) == 24, len(minutes) == 60
    if every_minute and every_hour:
        text = "Every minute"
    elif len(minutes) == 1 and len(hours) <= 4:
        text = "At " + _join([f"{h:02d}:{min(minutes):02d}" for h in sorted(hours)])
    else:
        step = _step(minutes, 0, 59)
        if every_minute:
            text = "Every minute"
        elif step:
            text = f"Every {step} minutes"
        else:
            text = f"At minute {_list(minutes, str)}"
        if not every_hour:
            hour_step, runs = _step(hours, 0, 23), _runs(sorted(hours))
            if hour_step:
                text += f", every {hour_step} hours"
            elif len(runs) == 1:
                text += f", between {runs[0][0]:02d}:00 and {runs[0][1]:02d}:59"
            else:
                text += f", during hours {_list(hours, lambda h: f'{h:02d}')}"
        elif not step and not every_minute:
            text += " past every hour"
    if len(fields["day_of_month"]) != 31:
        text += f", on day {_list(fields['day_of_month'], str)} of the month"
    if len(fields["day_of_week"]) != 7:
        text += f", only on {_list(fields['day_of_week'], lambda d: _DAYS[d])}"
    if len(fields["month_of_year"]) != 12:
        text += f", only in {_list(fields['month_of_year'], lambda m: _MONTHS[m - 1])}"
    return text
