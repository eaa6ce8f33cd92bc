"""Result store selection by URL scheme (lazy imports, as for brokers)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from ..brokers import scheme_of
from ..exceptions import ImproperlyConfigured
from .base import ResultStore

__all__ = ["ResultStore", "store_for_url"]

_BY_SCHEME: dict[str, str] = {
    "memory": "celeriac.backends.memory:MemoryResultStore",
    "cache+memory": "celeriac.backends.memory:MemoryResultStore",
    "sqlite": "celeriac.backends.sqlite:SQLiteResultStore",
    "db+sqlite": "celeriac.backends.sqlite:SQLiteResultStore",
    "redis": "celeriac.backends.redis:RedisResultStore",
    "rediss": "celeriac.backends.redis:RedisResultStore",
    "sentinel": "celeriac.backends.redis:RedisResultStore",
    **{scheme: "celeriac.brokers.postgres.results:PostgresResultStore"
       for scheme in ("postgresql", "postgres", "db+postgresql", "db+postgres",
                      "db+postgresql+psycopg", "db+postgresql+psycopg2")},
}


def store_for_url(url: str, *, expires: float | None = 86400.0,
                  options: Mapping[str, Any] | None = None) -> ResultStore:
    """Create the result store for ``url``."""
    full = url.split("://", 1)[0].lower() if "://" in url else url.lower()
    target = _BY_SCHEME.get(full) or _BY_SCHEME.get(scheme_of(url))
    if target is None:
        known = ", ".join(sorted(_BY_SCHEME))
        raise ImproperlyConfigured(
            f"result_backend: unsupported scheme in {url!r} (known: {known})"
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = " (pip install 'celeriac[postgres]')" if "postgres" in module_name else ""
        raise ImproperlyConfigured(f"result_backend: {url!r} needs {exc.name}{hint}") from exc
    cls: type[ResultStore] = getattr(module, attr)
    return cls(url, expires=expires, options=options)
