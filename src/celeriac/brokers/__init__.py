"""Broker selection by URL scheme.

Brokers are our own modules, imported lazily so that a driver (redis-py,
psycopg) is only needed when its broker is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from ..exceptions import ImproperlyConfigured
from .base import Broker, Capabilities, DeadLetter, Delivery, Publish, QueueStats

__all__ = ["Broker", "Capabilities", "DeadLetter", "Delivery", "Publish", "QueueStats",
           "broker_for_url", "scheme_of"]

_BY_SCHEME: dict[str, str] = {
    "memory": "celeriac.brokers.memory:MemoryBroker",
    "sqlite": "celeriac.brokers.sqlite:SQLiteBroker",
    "redis": "celeriac.brokers.redis:RedisBroker",
    "rediss": "celeriac.brokers.redis:RedisBroker",
    "sentinel": "celeriac.brokers.redis:RedisBroker",
    "postgresql": "celeriac.brokers.postgres.broker:PostgresBroker",
    "postgres": "celeriac.brokers.postgres.broker:PostgresBroker",
}

_EXTRAS = {"redis": "redis", "rediss": "redis", "sentinel": "redis",
           "postgresql": "postgres", "postgres": "postgres"}


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else url.lower()


def broker_class(url: str) -> type[Broker]:
    scheme = scheme_of(url)
    try:
        target = _BY_SCHEME[scheme]
    except KeyError:
        known = ", ".join(sorted(_BY_SCHEME))
        raise ImproperlyConfigured(
            f"broker_url: unsupported scheme {scheme!r} in {url!r} (known: {known})"
        ) from None
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = _EXTRAS.get(scheme)
        hint = f" (pip install 'celeriac[{extra}]')" if extra else ""
        raise ImproperlyConfigured(f"broker_url: {scheme}:// needs {exc.name}{hint}") from exc
    cls: type[Broker] = getattr(module, attr)
    return cls


def broker_for_url(url: str, *, lease_seconds: float = 30.0,
                   options: Mapping[str, Any] | None = None) -> Broker:
    """Create the broker for ``url``."""
    return broker_class(url)(url, lease_seconds=lease_seconds, options=options)
