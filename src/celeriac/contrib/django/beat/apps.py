"""Django app config of ``celeriac.contrib.django.beat`` (label ``celeriac_beat``)."""

from __future__ import annotations

from django.apps import AppConfig


class BeatConfig(AppConfig):
    name = "celeriac.contrib.django.beat"
    label = "celeriac_beat"
    verbose_name = "Periodic Tasks"
    default_auto_field = "django.db.models.AutoField"
