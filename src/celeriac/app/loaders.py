"""Finding modules: ``autodiscover_tasks`` over packages or Django's installed apps, and
the objects ``config_from_object`` names (``module:attr``, ``module.attr``)."""

from __future__ import annotations

import importlib
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
    """Import ``package.related_name`` if that module exists, as Celery's
    ``find_related_module``: a missing package raises (a typo must not pass silently),
    except a Django ``app.apps.AppConfig`` path, which is walked up one level; a
    package without the module is skipped; errors inside the module propagate."""
    try:
        module = importlib.import_module(package)
        if not related_name:
            return module
    except ModuleNotFoundError:
        package = package.rpartition(".")[0]
        if not package:
            raise
    name = f"{package}.{related_name}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise


def import_object(path: str) -> Any:
    """Import ``module:attr``, ``module.attr`` or a module."""
    if ":" in path:
        module, _, attr = path.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj
    try:
        return importlib.import_module(path)
    except ImportError:
        module, _, attr = path.rpartition(".")
        if not module:
            raise
        return getattr(importlib.import_module(module), attr)
