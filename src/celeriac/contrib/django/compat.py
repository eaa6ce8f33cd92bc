"""Where Django's tasks framework lives: ``django.tasks`` (Django 6.0+), or the
``django_tasks`` backport for older Django; a clear error when neither is there."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

MISSING = ("celeriac.contrib.django.tasks.CeleriacBackend needs Django's tasks framework: the "
           "installed Django {version} has no django.tasks (added in Django 6.0). Upgrade to "
           "Django >= 6.0 (Python >= 3.12), or install the backport: pip install django-tasks")


def tasks_modules() -> tuple[ModuleType, ModuleType, ModuleType, ModuleType, ModuleType]:
    """``(package, base, backends.base, exceptions, signals)`` of the tasks framework."""
    for root in ("django.tasks", "django_tasks"):
        try:
            found = tuple(importlib.import_module(f"{root}{suffix}") for suffix in (
                "", ".base", ".backends.base", ".exceptions", ".signals"))
            return found  # type: ignore[return-value]
        except ImportError:
            continue
    from django.core.exceptions import ImproperlyConfigured

    import django

    raise ImproperlyConfigured(MISSING.format(version=django.get_version()))


def exception(exceptions: ModuleType, *names: str) -> Any:
    """The first of ``names`` the framework's exceptions module defines (they were renamed)."""
    for name in names:
        found = getattr(exceptions, name, None)
        if found is not None:
            return found
    raise AttributeError(names[0])


def normalize_json(value: Any) -> Any:
    """Django's ``normalize_json`` (the backport has its own copy)."""
    try:
        from django.utils.json import normalize_json as normalize
    except ImportError:
        from django_tasks.utils import normalize_json as normalize
    return normalize(value)
