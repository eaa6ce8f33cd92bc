"""Django app config of ``celeriac.contrib.django.beat`` (label ``celeriac_beat``).

``ready()`` connects django-celery-beat's change tracking for what bypasses
``save()``/``delete()`` of single objects: a queryset ``delete()`` of tasks or
schedules (``PeriodicTask.objects.all().delete()`` in the HackSoft command)
updates ``PeriodicTasks.last_update`` too.
"""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class BeatConfig(AppConfig):
    name = "celeriac.contrib.django.beat"
    label = "celeriac_beat"
    verbose_name = "Periodic Tasks"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from . import models

        def changed(sender: Any, **kwargs: Any) -> None:
            models.PeriodicTasks.update_changed()

        for model in (models.PeriodicTask, models.IntervalSchedule, models.CrontabSchedule,
                      models.SolarSchedule, models.ClockedSchedule):
            post_delete.connect(changed, sender=model, weak=False,
                                dispatch_uid=f"celeriac_beat_changed_{model.__name__}")
