"""Django app ``celeriac.contrib.django`` (label ``celeriac``): outbox table, commands."""

from __future__ import annotations

from django.apps import AppConfig


class CeleriacConfig(AppConfig):
    name = "celeriac.contrib.django"
    label = "celeriac"
    verbose_name = "Celeriac"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .db import install_hooks

        install_hooks()
