"""Django app ``celeriac.contrib.django`` (label ``celeriac``): outbox table, commands."""

from __future__ import annotations

from django.apps import AppConfig

from .fixup import install_hooks


class CeleriacConfig(AppConfig):
    name = "celeriac.contrib.django"
    label = "celeriac"
    verbose_name = "Celeriac"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        install_hooks()
