"""Finding task modules: ``autodiscover_tasks`` over packages or Django's installed apps."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from typing import Any


def discover_packages(packages: Any) -> list[str]:
    """Resolve the ``packages`` argument of autodiscover_tasks to package names."""
    if callable(packages):
        packages = packages()
    if packages is None:
        packages = _django_apps()
    return [p for p in (_app_name(x) for x in packages or ()) if p]


def _app_name(entry: Any) -> str:
    return str(getattr(entry, "name", entry))


def _django_apps() -> Iterable[str]:
    try:
        from django.apps import apps
        from django.conf import settings
    except ImportError:
        return []
    if not settings.configured:
        return []
    if apps.ready:
        return [config.name for config in apps.get_app_configs()]
    return list(settings.INSTALLED_APPS)


def import_related(package: str, related_name: str = "tasks") -> Any:
    """Import ``package.related_name`` if that module exists; errors inside it propagate."""
    if not related_name:
        return importlib.import_module(package)
    try:
        pkg = importlib.import_module(package)
    except ImportError:
        return None
    if not hasattr(pkg, "__path__"):
        return None
    name = f"{package}.{related_name}"
    if importlib.util.find_spec(name) is None:
        return None
    return importlib.import_module(name)
