"""The one table of URL schemes: which engine serves a URL as broker, result store, beat store.

:data:`SCHEMES` maps a URL scheme (``sqlite``, ``redis``, ``redis+socket``...)
to the function that loads its engine. An engine function imports its own
package only when called, so a driver (redis-py, psycopg, later an AMQP
client) is needed only when its engine is used, and returns an
:class:`Engine`: the broker class, the result store class and the schedule
store factory it provides. A scheme may stand for only some of them
(``cache+memory://`` names a result store, not a broker, as in Celery).

A new engine is a package under ``celeriac/brokers/<name>/``, one function
here and its rows in :data:`SCHEMES`. An integration that sits above the core
adds its rows with :func:`register_scheme` instead, so the table never imports
it: ``celeriac.contrib.django`` registers ``django-db`` and ``django-cache``
(result stores) and ``django://`` (schedule store) when it is imported, which
every app does through its built-in fix-up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..exceptions import ImproperlyConfigured
from ..results.store import ResultStore
from ..schedules.store import ScheduleStore
from .base import Broker

BROKER, RESULTS, BEAT = "broker", "results", "beat"
ALL_ROLES = frozenset({BROKER, RESULTS, BEAT})

#: ``(url, *, app, options, prefix)`` -> the schedule store at ``url``
BeatStoreFactory = Callable[..., ScheduleStore]


class SchemaAdmin(Protocol):
    """``celeriac db`` on an engine whose schema is versioned (each returns lines to print)."""

    def identity(self, url: str, options: Mapping[str, Any], setting: str) -> tuple[str, str]:
        """``(key, label)``: URLs with one key share one schema."""

    def migrate(self, url: str, options: Mapping[str, Any], setting: str) -> list[str]:
        """Create or upgrade the schema."""

    def status(self, url: str, options: Mapping[str, Any], setting: str) -> list[str]:
        """The schema's version and table sizes."""

    def vacuum(self, url: str, options: Mapping[str, Any], setting: str) -> list[str]:
        """Delete expired rows and reclaim space now."""


@dataclass(frozen=True)
class Engine:
    """What one storage engine provides (None where it provides nothing)."""

    broker: type[Broker] | None
    result_store: type[ResultStore] | None
    beat_store: BeatStoreFactory | None
    #: schema management for ``celeriac db`` (engines that version a schema)
    admin: SchemaAdmin | None = None


@dataclass(frozen=True)
class Scheme:
    """One row of the table: the engine a scheme loads and what the scheme names."""

    load: Callable[[], Engine]
    roles: frozenset[str] = ALL_ROLES
    #: the ``pip install 'celeriac[<extra>]'`` that brings the engine's driver
    extra: str | None = None
    #: results default to the broker's own URL (one file, one process), as beat does
    embedded: bool = False


def memory_engine() -> Engine:
    from .memory.beat_store import store_for_url as beat_store
    from .memory.broker import MemoryBroker
    from .memory.results import MemoryResultStore

    return Engine(MemoryBroker, MemoryResultStore, beat_store)


def sqlite_engine() -> Engine:
    from .sqlite.beat_store import store_for_url as beat_store
    from .sqlite.broker import SQLiteBroker
    from .sqlite.results import SQLiteResultStore

    return Engine(SQLiteBroker, SQLiteResultStore, beat_store)


def redis_engine() -> Engine:
    from .redis.beat_store import store_for_url as beat_store
    from .redis.broker import RedisBroker
    from .redis.results import RedisResultStore

    return Engine(RedisBroker, RedisResultStore, beat_store)


def redis_cluster_engine() -> Engine:
    from .redis.beat_store import store_for_url as beat_store
    from .redis.cluster import RedisClusterBroker
    from .redis.cluster_results import RedisClusterResultStore

    return Engine(RedisClusterBroker, RedisClusterResultStore, beat_store)


def postgres_engine() -> Engine:
    from .postgres.admin import ADMIN
    from .postgres.beat_store import store_for_url as beat_store
    from .postgres.broker import PostgresBroker
    from .postgres.results import PostgresResultStore

    return Engine(PostgresBroker, PostgresResultStore, beat_store, ADMIN)


def amqp_engine() -> Engine:
    from .amqp.broker import AMQPBroker
    from .amqp.rpc import RPCResultStore

    return Engine(AMQPBroker, RPCResultStore, None)


_REDIS = Scheme(redis_engine, extra="redis")
_REDIS_CLUSTER = Scheme(redis_cluster_engine, extra="redis")
_AMQP = Scheme(amqp_engine, roles=frozenset({BROKER}), extra="amqp")
#: Celery's RPC result backend: results as messages to the caller's reply queue
_RPC = Scheme(amqp_engine, roles=frozenset({RESULTS}), extra="amqp")
_POSTGRES = Scheme(postgres_engine, extra="postgres")
#: Celery's SQLAlchemy result-backend URLs: results (and beat, as db+sqlite), not a broker
_POSTGRES_DB = Scheme(postgres_engine, roles=frozenset({RESULTS, BEAT}), extra="postgres")

SCHEMES: dict[str, Scheme] = {
    "memory": Scheme(memory_engine, embedded=True),
    "cache+memory": Scheme(memory_engine, roles=frozenset({RESULTS})),
    "sqlite": Scheme(sqlite_engine, embedded=True),
    "db+sqlite": Scheme(sqlite_engine, roles=frozenset({RESULTS, BEAT})),
    "sqla+sqlite": Scheme(sqlite_engine, roles=frozenset({BEAT})),
    "redis": _REDIS,
    "rediss": _REDIS,
    "sentinel": _REDIS,
    "redis+socket": _REDIS,
    "unix": _REDIS,
    "redis+cluster": _REDIS_CLUSTER,
    "rediss+cluster": _REDIS_CLUSTER,
    "amqp": _AMQP,
    "amqps": _AMQP,
    "pyamqp": _AMQP,
    "rpc": _RPC,
    "postgresql": _POSTGRES,
    "postgres": _POSTGRES,
    "db+postgresql": _POSTGRES_DB,
    "db+postgres": _POSTGRES_DB,
    "db+postgresql+psycopg": _POSTGRES_DB,
    "db+postgresql+psycopg2": _POSTGRES_DB,
}


def register_scheme(name: str, row: Scheme) -> None:
    """Add the row of an engine that lives above the core (a framework integration)."""
    current = SCHEMES.get(name)
    if current is not None and current != row:
        raise ImproperlyConfigured(f"URL scheme {name!r} is already served by {current.load!r}")
    SCHEMES[name] = row


def scheme_of(url: str) -> str:
    """The scheme's head: ``redis`` for ``redis+socket://...`` (kombu's transport name)."""
    return url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else url.lower()


def full_scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else url.lower()


def _row(url: str, role: str) -> tuple[str, Scheme] | None:
    for name in (full_scheme(url), scheme_of(url)):
        row = SCHEMES.get(name)
        if row is not None and role in row.roles:
            return name, row
    return None


def known_schemes(role: str) -> list[str]:
    return sorted(name for name, row in SCHEMES.items() if role in row.roles)


def serves(url: str, role: str) -> bool:
    """True when a scheme of the table names ``role`` (broker, results, beat) for ``url``."""
    return _row(url, role) is not None


def is_embedded(url: str) -> bool:
    """True for engines whose results live with the broker (SQLite file, memory)."""
    found = _row(url, BROKER)
    return found is not None and found[1].embedded


#: per role: the setting it comes from, and the error for a scheme no engine serves
_UNSERVED = {
    BROKER: ("broker_url", "broker_url: unsupported scheme {head!r} in {url!r} (known: {known})"),
    RESULTS: ("result_backend", "result_backend: unsupported scheme in {url!r} (known: {known})"),
    BEAT: ("beat_schedule_store", "beat_schedule_store: unsupported scheme in {url!r}"),
}


def engine_for(url: str, role: str) -> Engine:
    """Load the engine serving ``url`` as ``role``; ImproperlyConfigured names the setting."""
    setting, unserved = _UNSERVED[role]
    found = _row(url, role)
    if found is None:
        raise ImproperlyConfigured(unserved.format(head=scheme_of(url), url=url,
                                                   known=", ".join(known_schemes(role))))
    name, row = found
    try:
        return row.load()
    except ImportError as exc:
        hint = f" (pip install 'celeriac[{row.extra}]')" if row.extra else ""
        if role == BROKER:
            raise ImproperlyConfigured(f"broker_url: {name}:// needs {exc.name}{hint}") from exc
        raise ImproperlyConfigured(f"{setting}: {url!r} needs {exc.name}{hint}") from exc


def broker_class(url: str) -> type[Broker]:
    cls = engine_for(url, BROKER).broker
    assert cls is not None
    return cls


def broker_for_url(url: str, *, lease_seconds: float = 30.0,
                   options: Mapping[str, Any] | None = None) -> Broker:
    """Create the broker for ``url``."""
    return broker_class(url)(url, lease_seconds=lease_seconds, options=options)


def store_for_url(url: str, *, expires: float | None = 86400.0,
                  options: Mapping[str, Any] | None = None) -> ResultStore:
    """Create the result store for ``url``."""
    cls = engine_for(url, RESULTS).result_store
    assert cls is not None
    return cls(url, expires=expires, options=options)


def beat_store_for_url(url: str, *, app: Any = None, options: Mapping[str, Any] | None = None,
                       prefix: str) -> ScheduleStore:
    """Create the schedule store for ``url`` (``memory://``, ``sqlite:///path``, ``redis://``,
    ``postgresql://``)."""
    if _row(url, BEAT) is None:
        raise ValueError(f"beat: no schedule store for {url!r} "
                         "(use sqlite://, redis://, postgresql:// or memory://)")
    factory = engine_for(url, BEAT).beat_store
    assert factory is not None
    return factory(url, app=app, options=dict(options or {}), prefix=prefix)
