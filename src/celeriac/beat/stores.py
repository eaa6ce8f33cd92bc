"""Choosing the schedule store for an app.

Order: the ``beat_schedule_store`` setting (a URL) if set; otherwise the
broker's URL (SQLite broker -> same file, Redis broker -> same Redis, PostgreSQL
broker -> same database and schema, memory broker -> a memory store private to the
app, like the broker); otherwise the
result backend if it is Redis or SQLite; otherwise a SQLite file in the working directory, which
only schedulers on this host share (a warning says so).
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from ..brokers import scheme_of
from .store import MemoryStore, ScheduleStore

logger = logging.getLogger(__name__)

SQLITE_SCHEMES = ("sqlite", "db+sqlite", "sqla+sqlite")
REDIS_SCHEMES = ("redis", "rediss", "sentinel")
POSTGRES_SCHEMES = ("postgresql", "postgres")
DEFAULT_PREFIX = "celeriac:beat:"

#: A memory broker belongs to one app, so its schedule store does too.
_APP_MEMORY_STORES: weakref.WeakKeyDictionary[Any, MemoryStore] = weakref.WeakKeyDictionary()
_APP_MEMORY_LOCK = threading.Lock()


def _scheme(url: str) -> str:
    head = url.split("://", 1)[0].lower() if "://" in url else url.lower()
    return "sqlite" if head in SQLITE_SCHEMES else scheme_of(url)


def store_for_url(url: str, *, app: Any = None, options: dict[str, Any] | None = None,
                  prefix: str = DEFAULT_PREFIX) -> ScheduleStore:
    """The store for a URL: ``memory://``, ``sqlite:///path`` or ``redis://...``."""
    scheme = _scheme(url)
    if scheme == "memory":
        return MemoryStore.shared(url)
    if scheme == "sqlite":
        from .sqlite_store import SQLiteStore

        return SQLiteStore("sqlite://" + url.split("://", 1)[1], app=app)
    if scheme in REDIS_SCHEMES:
        from .redis_store import RedisStore

        return RedisStore(url, prefix=prefix, options=options, app=app)
    if scheme in POSTGRES_SCHEMES:
        from ..brokers.postgres.beat_store import PostgresStore

        return PostgresStore(url, app=app, options=options)
    raise ValueError(f"beat: no schedule store for {url!r} "
                     "(use sqlite://, redis://, postgresql:// or memory://)")


def _broker_url(app: Any) -> str | None:
    url = getattr(app, "broker_url", None) or app.conf.get("broker_url")
    return str(url) if url else None


def store_url_for_app(app: Any) -> tuple[str, dict[str, Any]]:
    """The URL (and connection options) of the store :func:`store_for_app` would open."""
    conf = app.conf
    explicit = conf.get("beat_schedule_store")
    if explicit:
        return str(explicit), dict(conf.get("broker_transport_options") or {})
    broker = _broker_url(app)
    if broker and _scheme(broker) in ("memory", "sqlite", *REDIS_SCHEMES,
                                      *POSTGRES_SCHEMES):
        return broker, dict(conf.get("broker_transport_options") or {})
    backend = conf.get("result_backend")
    if isinstance(backend, str) and _scheme(backend) in ("sqlite", *REDIS_SCHEMES):
        return backend, dict(conf.get("result_backend_transport_options") or {})
    logger.warning("beat: broker %r has no schedule store; using a local SQLite file, shared "
                   "only by schedulers on this host (set beat_schedule_store to share it)",
                   broker)
    return "sqlite://", {}


def store_for_app(app: Any) -> ScheduleStore:
    """Open the schedule store of ``app`` (see the module docstring)."""
    url, options = store_url_for_app(app)
    if _scheme(url) == "memory" and not app.conf.get("beat_schedule_store"):
        with _APP_MEMORY_LOCK:
            if app not in _APP_MEMORY_STORES:
                _APP_MEMORY_STORES[app] = MemoryStore(url)
            return _APP_MEMORY_STORES[app]
    # Honour kombu's global_keyprefix, so beat's keys sit beside the broker's.
    prefix = (app.conf.get("beat_redis_key_prefix")
              or str(options.get("global_keyprefix") or "") + DEFAULT_PREFIX)
    return store_for_url(url, app=app, options=options, prefix=prefix)
