"""Choosing the schedule store for an app.

Order: the ``beat_schedule_store`` setting (a URL) if set; otherwise the
broker's URL (SQLite broker -> same file, Redis broker -> same Redis, PostgreSQL
broker -> same database and schema, memory broker -> a memory store private to the
app, like the broker); otherwise the result backend if it is Redis, SQLite or
PostgreSQL; otherwise a SQLite file in the working directory, which only
schedulers on this host share (a warning says so). The engines are the scheme
table's (:mod:`celeriac.brokers.registry`).
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from ..brokers.memory.beat_store import MemoryStore
from ..brokers.registry import BEAT, beat_store_for_url, scheme_of, serves
from .store import ScheduleStore

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "celeriac:beat:"

#: A memory broker belongs to one app, so its schedule store does too.
_APP_MEMORY_STORES: weakref.WeakKeyDictionary[Any, MemoryStore] = weakref.WeakKeyDictionary()
_APP_MEMORY_LOCK = threading.Lock()


def store_for_url(url: str, *, app: Any = None, options: dict[str, Any] | None = None,
                  prefix: str = DEFAULT_PREFIX) -> ScheduleStore:
    """The store for a URL: ``memory://``, ``sqlite:///path``, ``redis://...``,
    ``postgresql://...``."""
    return beat_store_for_url(url, app=app, options=options, prefix=prefix)


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
    if broker and serves(broker, BEAT):
        return broker, dict(conf.get("broker_transport_options") or {})
    backend = conf.get("result_backend")
    # a memory result store is private to one process: schedules there are not shared
    if isinstance(backend, str) and serves(backend, BEAT) and scheme_of(backend) != "memory":
        return backend, dict(conf.get("result_backend_transport_options") or {})
    logger.warning("beat: broker %r has no schedule store; using a local SQLite file, shared "
                   "only by schedulers on this host (set beat_schedule_store to share it)",
                   broker)
    return "sqlite://", {}


def store_for_app(app: Any) -> ScheduleStore:
    """Open the schedule store of ``app`` (see the module docstring)."""
    url, options = store_url_for_app(app)
    if scheme_of(url) == "memory" and not app.conf.get("beat_schedule_store"):
        with _APP_MEMORY_LOCK:
            if app not in _APP_MEMORY_STORES:
                _APP_MEMORY_STORES[app] = MemoryStore(url)
            return _APP_MEMORY_STORES[app]
    # Honour kombu's global_keyprefix, so beat's keys sit beside the broker's.
    prefix = (app.conf.get("beat_redis_key_prefix")
              or str(options.get("global_keyprefix") or "") + DEFAULT_PREFIX)
    return store_for_url(url, app=app, options=options, prefix=prefix)
