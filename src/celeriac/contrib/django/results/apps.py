"""Django app config of ``celeriac.contrib.django.results`` (label ``celeriac_results``)."""

from __future__ import annotations

from django.apps import AppConfig


class ResultsConfig(AppConfig):
    name = "celeriac.contrib.django.results"
    label = "celeriac_results"
    verbose_name = "Celeriac results"
    default_auto_field = "django.db.models.AutoField"
