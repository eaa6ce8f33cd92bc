"""Admin for periodic tasks: enable/disable, run now, next run, crontabs in words.

Every change goes through ``PeriodicTask.save()``, which bumps the task's
version, so a running beat reloads it within one tick and never fires the old
definition. **Run now** claims a manual fire in the schedule store and sends the
task at once (counted in ``total_run_count``, the schedule's cursor untouched).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _

from celeriac.app import state as _state
from celeriac.schedules import app_timezone
from celeriac.schedules.firing import deliver, new_record

from .models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)
from .store import DjangoScheduleStore, with_task_name


def _app() -> Any:
    return _state.get_current_app()


def next_run(task: PeriodicTask) -> datetime | None:
    """When the task fires next as the scheduler sees it (None: disabled or never)."""
    entry = DjangoScheduleStore(f"django://{task._state.db or 'default'}")._entry(task)
    if entry is None or not entry.enabled:
        return None
    tz, now = app_timezone(_app()), datetime.now(timezone.utc)
    following = entry.next_run_at(tz)
    if following is not None and following < now:  # overdue: the next one the policy runs
        following = entry.spec.schedule.next_fire_after(now, anchor=entry.anchor, tz=tz)
    return following


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(admin.ModelAdmin):
    list_display = ("name", "enabled", "scheduler", "next_run_at", "last_run_at",
                    "total_run_count", "one_off")
    list_filter = ("enabled", "one_off", "task", "start_time", "last_run_at")
    search_fields = ("name", "task", "description")
    readonly_fields = ("last_run_at", "total_run_count", "next_run_at", "date_changed")
    actions = ("enable_tasks", "disable_tasks", "toggle_tasks", "run_tasks")
    fieldsets = (
        (None, {"fields": ("name", "task", "enabled", "description"),
                "classes": ("extrapretty", "wide")}),
        (_("Schedule"), {"fields": ("interval", "crontab", "solar", "clocked", "start_time",
                                    "one_off", "missed", "max_lateness"),
                         "classes": ("extrapretty", "wide")}),
        (_("Arguments"), {"fields": ("args", "kwargs"), "classes": ("extrapretty", "wide")}),
        (_("Execution Options"), {"fields": ("expires", "expire_seconds", "queue", "exchange",
                                             "routing_key", "priority", "headers", "options"),
                                  "classes": ("extrapretty", "wide", "collapse")}),
        (_("Runs"), {"fields": ("next_run_at", "last_run_at", "total_run_count",
                                "date_changed")}),
    )

    @admin.display(description=_("Next run"))
    def next_run_at(self, obj: PeriodicTask) -> datetime | None:
        return next_run(obj) if obj.pk else None

    def _set_enabled(self, request: Any, queryset: Any, enabled: bool | None) -> None:
        changed = 0
        for task in queryset:
            task.enabled = (not task.enabled) if enabled is None else enabled
            task.save()
            changed += 1
        self.message_user(request, _("%(n)d task(s) changed; running beats apply it within "
                                     "one tick") % {"n": changed}, messages.SUCCESS)

    @admin.action(description=_("Enable selected tasks"))
    def enable_tasks(self, request: Any, queryset: Any) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description=_("Disable selected tasks"))
    def disable_tasks(self, request: Any, queryset: Any) -> None:
        self._set_enabled(request, queryset, False)

    @admin.action(description=_("Toggle activity of selected tasks"))
    def toggle_tasks(self, request: Any, queryset: Any) -> None:
        self._set_enabled(request, queryset, None)

    @admin.action(description=_("Run selected tasks now"))
    def run_tasks(self, request: Any, queryset: Any) -> None:
        app, sent = _app(), []
        store = DjangoScheduleStore(f"django://{queryset.db}", app=app)
        for task in queryset:
            entry = store.get_entry(task.name)
            if entry is None:
                self.message_user(request, _("%(name)s is invalid and was not sent") % {
                    "name": task.name}, messages.ERROR)
                continue
            now = datetime.now(timezone.utc)
            record = new_record(with_task_name(entry).spec, now, owner="admin run-now",
                                now=now, manual=True)
            if store.claim_fire(record, entry.version) and deliver(app, store, record, now):
                sent.append(f"{task.name} ({record.task_id})")
        if sent:
            self.message_user(request, _("Sent: %(tasks)s") % {"tasks": ", ".join(sent)},
                              messages.SUCCESS)


@admin.register(CrontabSchedule)
class CrontabScheduleAdmin(admin.ModelAdmin):
    list_display = ("__str__", "human_readable")
    fields = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week", "timezone")


@admin.register(IntervalSchedule)
class IntervalScheduleAdmin(admin.ModelAdmin):
    list_display = ("__str__", "every", "period")


@admin.register(SolarSchedule)
class SolarScheduleAdmin(admin.ModelAdmin):
    list_display = ("__str__", "event", "latitude", "longitude")


@admin.register(ClockedSchedule)
class ClockedScheduleAdmin(admin.ModelAdmin):
    list_display = ("__str__", "clocked_time")
