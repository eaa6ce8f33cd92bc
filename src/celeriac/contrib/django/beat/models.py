"""django-celery-beat's models and names, plus the state celeriac's claims need.

``IntervalSchedule``, ``CrontabSchedule`` (with ``timezone``), ``SolarSchedule``,
``ClockedSchedule``, ``PeriodicTask`` (every django-celery-beat field) and
``PeriodicTasks`` (the change marker) behave as django-celery-beat's: exactly
one schedule per task, a clocked task must be ``one_off``, ``expires`` disables
the task once passed, ``expire_seconds``/``expires`` become the message's expiry,
``headers`` are sent with ``periodic_task_name`` added, a ``one_off`` task is
disabled after its run, nothing is sent before ``start_time``.

What celeriac adds (not editable in forms): ``version`` (bumped by every save of
the task or of its schedule, so a running beat never fires an old definition),
the run cursor ``anchor_us``/``last_run_us``/``dropped_us`` (UTC microseconds,
compared exactly when a fire is claimed), ``missed``/``max_lateness`` (the
missed-run policy of :mod:`celeriac.schedules.policy`), ``options`` (other publish
options, JSON), ``source``/``code_hash`` (entries synced from ``beat_schedule``),
and two tables of its own: ``ScheduleFire`` (one row per claimed fire, unique
per task and fire time) and ``SchedulerLease`` (the leader lease).

A full ``save()`` of an existing task never writes its run state
(``last_run_at``, ``total_run_count``, the cursor), so an admin edit made while
a beat fires cannot rewind it; pass ``update_fields`` naming them to change them
on purpose.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import available_timezones

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils.translation import gettext_lazy as _

from celeriac import schedules as celeriac_schedules
from celeriac.app import state as _state
from celeriac.schedules import solar
from celeriac.schedules.store import to_us

from .periodic_task import PeriodicTask, PeriodicTasks, ScheduleFire, SchedulerLease
from .schedules import TzAwareCrontab, clocked, crontab_in_words

DAYS, HOURS, MINUTES, SECONDS, MICROSECONDS = ("days", "hours", "minutes", "seconds",
                                               "microseconds")
PERIOD_CHOICES = ((DAYS, _("Days")), (HOURS, _("Hours")), (MINUTES, _("Minutes")),
                  (SECONDS, _("Seconds")), (MICROSECONDS, _("Microseconds")))
SOLAR_SCHEDULES = [(e, e.replace("_", " ").capitalize()) for e in (
    "dawn_astronomical", "dawn_civil", "dawn_nautical", "dusk_astronomical", "dusk_civil",
    "dusk_nautical", "solar_noon", "sunrise", "sunset")]
MISSED_CHOICES = (("latest", _("run the latest missed fire")), ("skip", _("skip missed fires")),
                  ("all", _("run every missed fire")))


def now_us() -> int:
    return to_us(datetime.now(timezone.utc))


def _cron_text(value: Any) -> str:
    return str(value).replace(" ", "") if value not in (None, "") else "*"


def _touch_tasks(**schedule_filter: Any) -> None:
    """A schedule row changed: fence fires of the tasks using it and tell running beats."""
    PeriodicTask.objects.filter(**schedule_filter).update(
        version=F("version") + 1,
        anchor_us=Greatest(Coalesce(F("anchor_us"), Value(0)), Value(now_us())))
    PeriodicTasks.update_changed()


class ScheduleModel(models.Model):
    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        super().save(*args, **kwargs)
        _touch_tasks(**{self._meta.model_name.replace("schedule", ""): self})


class SolarSchedule(ScheduleModel):
    event = models.CharField(_("Solar Event"), max_length=24, choices=SOLAR_SCHEDULES)
    latitude = models.DecimalField(_("Latitude"), max_digits=9, decimal_places=6,
                                   validators=[MinValueValidator(-90), MaxValueValidator(90)])
    longitude = models.DecimalField(_("Longitude"), max_digits=9, decimal_places=6,
                                    validators=[MinValueValidator(-180), MaxValueValidator(180)])

    class Meta:
        verbose_name = _("solar event")
        verbose_name_plural = _("solar events")
        ordering = ("event", "latitude", "longitude")
        unique_together = ("event", "latitude", "longitude")

    @property
    def schedule(self) -> solar:
        return solar(self.event, float(self.latitude), float(self.longitude))

    @classmethod
    def from_schedule(cls, sched: solar) -> SolarSchedule:
        spec = {"event": sched.event, "latitude": sched.lat, "longitude": sched.lon}
        return cls.objects.filter(**spec).first() or cls(**spec)

    def __str__(self) -> str:
        return f"{self.get_event_display()} ({self.latitude}, {self.longitude})"


class IntervalSchedule(ScheduleModel):
    DAYS, HOURS, MINUTES, SECONDS, MICROSECONDS = DAYS, HOURS, MINUTES, SECONDS, MICROSECONDS
    PERIOD_CHOICES = PERIOD_CHOICES

    every = models.IntegerField(_("Number of Periods"), validators=[MinValueValidator(1)])
    period = models.CharField(_("Interval Period"), max_length=24, choices=PERIOD_CHOICES)

    class Meta:
        verbose_name = _("interval")
        verbose_name_plural = _("intervals")
        ordering = ["period", "every"]

    @property
    def schedule(self) -> celeriac_schedules.schedule:
        return celeriac_schedules.schedule(timedelta(**{self.period: self.every}))

    @classmethod
    def from_schedule(cls, sched: celeriac_schedules.schedule,
                      period: str = SECONDS) -> IntervalSchedule:
        every = max(int(sched.run_every.total_seconds()), 0)
        if sched.run_every.total_seconds() != every:
            every, period = int(sched.run_every / timedelta(microseconds=1)), MICROSECONDS
        return cls.objects.filter(every=every, period=period).first() or cls(
            every=every, period=period)

    def __str__(self) -> str:
        unit = self.period[:-1] if self.every == 1 else self.period
        return f"every {unit}" if self.every == 1 else f"every {self.every} {unit}"


class ClockedSchedule(ScheduleModel):
    clocked_time = models.DateTimeField(_("Clock Time"))

    class Meta:
        verbose_name = _("clocked")
        verbose_name_plural = _("clocked")
        ordering = ["clocked_time"]

    @property
    def schedule(self) -> clocked:
        return clocked(self.clocked_time)

    @classmethod
    def from_schedule(cls, sched: clocked) -> ClockedSchedule:
        return cls.objects.filter(clocked_time=sched.clocked_time).first() or cls(
            clocked_time=sched.clocked_time)

    def __str__(self) -> str:
        return str(self.clocked_time)


def default_crontab_timezone() -> str:
    name = _state.get_current_app().conf.get("timezone")
    return str(name) if name and str(name) in available_timezones() else "UTC"


class CrontabSchedule(ScheduleModel):
    minute = models.CharField(_("Minute(s)"), max_length=60 * 4, default="*")
    hour = models.CharField(_("Hour(s)"), max_length=24 * 4, default="*")
    day_of_month = models.CharField(_("Day(s) Of The Month"), max_length=31 * 4, default="*")
    month_of_year = models.CharField(_("Month(s) Of The Year"), max_length=64, default="*")
    day_of_week = models.CharField(_("Day(s) Of The Week"), max_length=64, default="*")
    timezone = models.CharField(_("Cron Timezone"), max_length=63,
                                default=default_crontab_timezone)

    class Meta:
        verbose_name = _("crontab")
        verbose_name_plural = _("crontabs")
        ordering = ["month_of_year", "day_of_month", "day_of_week", "hour", "minute", "timezone"]

    def clean(self) -> None:
        if str(self.timezone) not in available_timezones():
            raise ValidationError({"timezone": f"unknown time zone {self.timezone!r}"})
        try:
            self.schedule  # noqa: B018 - parses every field as Celery does
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc

    @property
    def schedule(self) -> TzAwareCrontab:
        return TzAwareCrontab(minute=self.minute, hour=self.hour, day_of_week=self.day_of_week,
                              day_of_month=self.day_of_month, month_of_year=self.month_of_year,
                              tz=str(self.timezone or "UTC"))

    @property
    def human_readable(self) -> str:
        try:
            text = crontab_in_words(_cron_text(self.minute), _cron_text(self.hour),
                                    _cron_text(self.day_of_month),
                                    _cron_text(self.month_of_year), _cron_text(self.day_of_week))
        except ValueError:
            return f"{self} (invalid)"
        return f"{text} {self.timezone}"

    @classmethod
    def from_schedule(cls, sched: Any) -> CrontabSchedule:
        spec = {k: _cron_text(getattr(sched, f"_orig_{k}")) for k in (
            "minute", "hour", "day_of_week", "day_of_month", "month_of_year")}
        spec["timezone"] = str(getattr(sched, "zone", None) or default_crontab_timezone())
        return cls.objects.filter(**spec).first() or cls(**spec)

    def __str__(self) -> str:
        return (f"{_cron_text(self.minute)} {_cron_text(self.hour)} "
                f"{_cron_text(self.day_of_month)} {_cron_text(self.month_of_year)} "
                f"{_cron_text(self.day_of_week)} (m/h/dM/MY/d) {self.timezone}")


__all__ = ["ClockedSchedule", "CrontabSchedule", "IntervalSchedule", "PeriodicTask",
           "PeriodicTasks", "ScheduleFire", "SchedulerLease", "SolarSchedule"]
