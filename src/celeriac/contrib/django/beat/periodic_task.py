"""``PeriodicTask`` and ``PeriodicTasks`` (django-celery-beat's fields and rules) and
celeriac's claim tables.

Imported by :mod:`.models`; see its docstring for what celeriac adds and why.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.db import IntegrityError, models, transaction
from django.db.models import F
from django.utils import timezone as dj_timezone
from django.utils.translation import gettext_lazy as _

from celeriac.schedules.store import from_us, to_us

SCHEDULE_FIELDS = ("interval", "crontab", "solar", "clocked")
#: run state: written by claims only, never by a plain save() of an existing task
RUN_STATE = frozenset({"last_run_at", "total_run_count", "last_run_us", "dropped_us"})
#: fields whose change moves the schedule's anchor to "now" (no catch-up of old fires)
RESCHEDULING = frozenset({*SCHEDULE_FIELDS, "enabled", "start_time"})


def _us(value: datetime | None) -> int | None:
    if value is None:
        return None
    return to_us(value if value.tzinfo else value.replace(tzinfo=timezone.utc))


class PeriodicTasks(models.Model):
    """One row (``ident=1``) whose ``last_update`` changes with any periodic task."""

    ident = models.SmallIntegerField(default=1, primary_key=True, unique=True)
    last_update = models.DateTimeField()

    class Meta:
        verbose_name = _("periodic task track")
        verbose_name_plural = _("periodic task tracks")

    @classmethod
    def changed(cls, instance: Any = None, **kwargs: Any) -> None:
        if not getattr(instance, "no_changes", False):
            cls.update_changed()

    @classmethod
    def update_changed(cls, using: str | None = None, **kwargs: Any) -> None:
        """Mark a change. The first statement writes: a read first (``update_or_create``)
        would make SQLite refuse the later write at once ("database is locked") whenever
        another process writes meanwhile, instead of waiting for it."""
        rows, now = cls.objects.using(using), dj_timezone.now()
        if rows.filter(ident=1).update(last_update=now):
            return
        try:
            with transaction.atomic(using=rows.db):
                rows.create(ident=1, last_update=now)
        except IntegrityError:  # created meanwhile by another process
            rows.filter(ident=1).update(last_update=now)

    @classmethod
    def last_change(cls) -> datetime | None:
        row = cls.objects.filter(ident=1).values_list("last_update", flat=True).first()
        return row


class PeriodicTask(models.Model):
    """A periodic task: django-celery-beat's model, fenced by celeriac's fire claims."""

    name = models.CharField(_("Name"), max_length=200, unique=True)
    task = models.CharField(_("Task Name"), max_length=200)
    interval = models.ForeignKey("celeriac_beat.IntervalSchedule", on_delete=models.CASCADE,
                                 null=True, blank=True, verbose_name=_("Interval Schedule"))
    crontab = models.ForeignKey("celeriac_beat.CrontabSchedule", on_delete=models.CASCADE,
                                null=True, blank=True, verbose_name=_("Crontab Schedule"))
    solar = models.ForeignKey("celeriac_beat.SolarSchedule", on_delete=models.CASCADE,
                              null=True, blank=True, verbose_name=_("Solar Schedule"))
    clocked = models.ForeignKey("celeriac_beat.ClockedSchedule", on_delete=models.CASCADE,
                                null=True, blank=True, verbose_name=_("Clocked Schedule"))
    args = models.TextField(_("Positional Arguments"), blank=True, default="[]")
    kwargs = models.TextField(_("Keyword Arguments"), blank=True, default="{}")
    queue = models.CharField(_("Queue Override"), max_length=200, blank=True, null=True,
                             default=None)
    exchange = models.CharField(_("Exchange"), max_length=200, blank=True, null=True,
                                default=None)
    routing_key = models.CharField(_("Routing Key"), max_length=200, blank=True, null=True,
                                   default=None)
    headers = models.TextField(_("AMQP Message Headers"), blank=True, default="{}")
    priority = models.PositiveIntegerField(_("Priority"), default=None, blank=True, null=True,
                                           validators=[MaxValueValidator(255)])
    expires = models.DateTimeField(_("Expires Datetime"), blank=True, null=True)
    expire_seconds = models.PositiveIntegerField(_("Expires timedelta with seconds"),
                                                 blank=True, null=True)
    one_off = models.BooleanField(_("One-off Task"), default=False)
    start_time = models.DateTimeField(_("Start Datetime"), blank=True, null=True)
    enabled = models.BooleanField(_("Enabled"), default=True)
    last_run_at = models.DateTimeField(_("Last Run Datetime"), editable=False, blank=True,
                                       null=True)
    total_run_count = models.PositiveIntegerField(_("Total Run Count"), default=0,
                                                  editable=False)
    date_changed = models.DateTimeField(_("Last Modified"), auto_now=True)
    description = models.TextField(_("Description"), blank=True)
    # celeriac
    options = models.TextField(_("Other publish options (JSON)"), blank=True, default="{}")
    missed = models.CharField(_("Missed runs"), max_length=8, default="latest", choices=(
        ("latest", _("run the latest missed fire")), ("skip", _("skip missed fires")),
        ("all", _("run every missed fire"))))
    max_lateness = models.FloatField(_("Max lateness (seconds)"), null=True, blank=True)
    version = models.PositiveIntegerField(default=1, editable=False)
    anchor_us = models.BigIntegerField(null=True, editable=False)
    last_run_us = models.BigIntegerField(null=True, editable=False)
    dropped_us = models.BigIntegerField(null=True, editable=False)
    source = models.CharField(max_length=16, default="runtime", editable=False)
    code_hash = models.CharField(max_length=64, null=True, blank=True, editable=False)

    no_changes = False

    class Meta:
        verbose_name = _("periodic task")
        verbose_name_plural = _("periodic tasks")
        indexes = [models.Index(fields=["enabled"], name="celeriac_beat_enabled")]

    # -- django-celery-beat's rules ----------------------------------------------------
    def validate_unique(self, *args: Any, **kwargs: Any) -> None:
        super().validate_unique(*args, **kwargs)
        chosen = [f for f in SCHEDULE_FIELDS if getattr(self, f"{f}_id", None)
                  or getattr(self, f, None)]
        if not chosen:
            raise ValidationError("One of clocked, interval, crontab, or solar must be set.")
        if len(chosen) > 1:
            message = "Only one of clocked, interval, crontab, or solar must be set"
            raise ValidationError({f: [message] for f in chosen})
        if self.clocked_id and not self.one_off:
            raise ValidationError("clocked must be one off, one_off must set True")

    def _clean_expires(self) -> None:
        if self.expire_seconds is not None and self.expires:
            raise ValidationError(_("Only one can be set, in expires and expire_seconds"))

    def clean(self) -> None:
        for field in ("args", "kwargs", "headers", "options"):
            value = getattr(self, field) or ("[]" if field == "args" else "{}")
            try:
                parsed = json.loads(value)
            except ValueError as exc:
                raise ValidationError({field: f"not valid JSON: {exc}"}) from exc
            if not isinstance(parsed, list if field == "args" else dict):
                raise ValidationError({field: "args must be a JSON list" if field == "args"
                                       else f"{field} must be a JSON object"})

    @property
    def expires_(self) -> Any:
        return self.expires or self.expire_seconds

    @property
    def scheduler(self) -> Any:
        for field in SCHEDULE_FIELDS:
            value = getattr(self, field)
            if value is not None:
                return value
        return None

    @property
    def schedule(self) -> Any:
        return self.scheduler.schedule

    # -- saving ------------------------------------------------------------------------
    def save(self, *args: Any, **kwargs: Any) -> None:
        self.exchange = self.exchange or None
        self.routing_key = self.routing_key or None
        self.queue = self.queue or None
        self.headers = self.headers or "{}"
        self._clean_expires()
        self.validate_unique()
        update_fields = kwargs.get("update_fields")
        current = None
        if self.pk is not None and not kwargs.get("force_insert"):
            current = type(self).objects.filter(pk=self.pk).values(
                "version", "anchor_us", *(f"{f}_id" for f in SCHEDULE_FIELDS), "enabled",
                "start_time").first()
        if current is None:
            self.version = self.version or 1
            self.anchor_us = self.initial_anchor(self.anchor_us)
        else:
            moved = any(current[f"{f}_id"] != getattr(self, f"{f}_id") for f in SCHEDULE_FIELDS)
            moved |= current["enabled"] != self.enabled or current["start_time"] != self.start_time
            anchor = current["anchor_us"] or 0
            if moved:
                anchor = max(anchor, self.initial_anchor(None))
            self.anchor_us, self.version = anchor, F("version") + 1
            if update_fields is None:
                kwargs["update_fields"] = [
                    f.name for f in self._meta.concrete_fields
                    if not f.primary_key and f.name not in RUN_STATE]
            elif "version" not in update_fields:
                kwargs["update_fields"] = [*update_fields, "version", "anchor_us"]
        super().save(*args, **kwargs)
        if current is not None:
            self.refresh_from_db(fields=["version"])
        PeriodicTasks.changed(self)

    def initial_anchor(self, anchor_us: int | None) -> int:
        """Where the schedule's grid starts: now, or so that the first fire is at
        ``start_time`` (as django-celery-beat: nothing runs before it)."""
        now = to_us(datetime.now(timezone.utc))
        start = _us(self.start_time)
        if start is not None and start > now:
            every = 1
            if self.interval_id:
                every = int(self.interval.schedule.run_every / timedelta(microseconds=1))
            return start - every
        return anchor_us if anchor_us is not None else now

    @property
    def anchor(self) -> datetime:
        return from_us(self.anchor_us or 0)

    def __str__(self) -> str:
        sched = self.scheduler
        return f"{self.name}: {sched}" if sched is not None else f"{self.name}: {{no schedule}}"


class ScheduleFire(models.Model):
    """One claimed fire of one periodic task (unique per task and fire time)."""

    entry = models.CharField(max_length=200)
    fire_us = models.BigIntegerField()
    task_id = models.CharField(max_length=255)
    payload = models.TextField()
    owner = models.CharField(max_length=255)
    claimed_us = models.BigIntegerField()
    state = models.CharField(max_length=16)
    sent_us = models.BigIntegerField(null=True)
    manual = models.BooleanField(default=False)

    class Meta:
        verbose_name = _("schedule fire")
        constraints = [models.UniqueConstraint(fields=["entry", "fire_us"],
                                               name="celeriac_beat_fire_unique")]
        indexes = [models.Index(fields=["state", "claimed_us"], name="celeriac_beat_fire_claim")]


class SchedulerLease(models.Model):
    """The leader lease among running beats (an efficiency device; claims are the fence)."""

    key = models.CharField(max_length=32, primary_key=True)
    owner = models.CharField(max_length=255)
    expires_us = models.BigIntegerField()


def bump(queryset: Any) -> int:
    """Fence the fires of these tasks (admin bulk actions)."""
    return int(queryset.update(version=F("version") + 1))
