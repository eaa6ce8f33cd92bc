"""Fixtures of the contract suites: every broker and result store, one parameter each.

To plug in a new broker or store, add its id to ``BROKERS``/``STORES`` and a
branch to ``make_broker``/``make_store``. Brokers get a 1 s lease so lease-lapse
tests stay fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from celeriac.brokers.base import Broker
from celeriac.results.store import ResultStore
from needs import need

LEASE_SECONDS = 1.0
BROKERS = ["memory", "sqlite", "redis", "redis-cluster", "postgres", "amqp"]
STORES = ["memory", "sqlite", "redis", "redis-cluster", "postgres", "django-db",
          "django-db-postgres", "django-cache"]


def load(module: str, attr: str) -> Any:
    """The class ``module.attr``; skip if ``module`` (or its driver) cannot be imported,
    fail instead under CI=true (:func:`needs.need`)."""
    return getattr(need(module), attr)


def make_broker(kind: str, request: pytest.FixtureRequest) -> Broker:
    if kind == "memory":
        from celeriac.brokers.memory.broker import MemoryBroker
        return MemoryBroker("memory://", lease_seconds=LEASE_SECONDS)
    if kind == "sqlite":
        from celeriac.brokers.sqlite.broker import SQLiteBroker
        path = request.getfixturevalue("sqlite_path")
        return SQLiteBroker(f"sqlite:///{path}", lease_seconds=LEASE_SECONDS)
    if kind == "redis":
        cls = load("celeriac.brokers.redis.broker", "RedisBroker")
        url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("key_prefix")
        broker: Broker = cls(url, lease_seconds=LEASE_SECONDS,
                             options={"global_keyprefix": prefix})
        return broker
    if kind == "redis-cluster":
        cls = load("celeriac.brokers.redis.cluster", "RedisClusterBroker")
        url = request.getfixturevalue("redis_cluster_url")
        prefix = request.getfixturevalue("cluster_key_prefix")
        on_cluster: Broker = cls(url, lease_seconds=LEASE_SECONDS,
                                 options={"global_keyprefix": prefix})
        return on_cluster
    if kind == "postgres":
        cls = load("celeriac.brokers.postgres.broker", "PostgresBroker")
        made: Broker = cls(request.getfixturevalue("postgres_url"), lease_seconds=LEASE_SECONDS)
        made.queues()  # creates the test's own schema now, not inside a timed step
        return made
    if kind == "amqp":
        cls = load("celeriac.brokers.amqp.broker", "AMQPBroker")
        # priorities need x-max-priority on RabbitMQ (Celery's task_queue_max_priority)
        rabbit: Broker = cls(request.getfixturevalue("rabbitmq_url"),
                             lease_seconds=LEASE_SECONDS, options={"max_priority": 9})
        rabbit.declare_delays()  # type: ignore[attr-defined]  # not inside a timed step
        return rabbit
    raise ValueError(kind)


def make_store(kind: str, request: pytest.FixtureRequest) -> ResultStore:
    if kind == "memory":
        from celeriac.brokers.memory.results import MemoryResultStore
        return MemoryResultStore("memory://")
    if kind == "sqlite":
        from celeriac.brokers.sqlite.results import SQLiteResultStore
        return SQLiteResultStore(f"sqlite:///{request.getfixturevalue('sqlite_path')}")
    if kind == "redis":
        cls = load("celeriac.brokers.redis.results", "RedisResultStore")
        url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("key_prefix")
        store: ResultStore = cls(url, options={"global_keyprefix": prefix})
        return store
    if kind == "redis-cluster":
        cls = load("celeriac.brokers.redis.cluster_results", "RedisClusterResultStore")
        url = request.getfixturevalue("redis_cluster_url")
        prefix = request.getfixturevalue("cluster_key_prefix")
        cluster_store: ResultStore = cls(url, options={"global_keyprefix": prefix})
        return cluster_store
    if kind == "postgres":
        cls = load("celeriac.brokers.postgres.results", "PostgresResultStore")
        pg_store: ResultStore = cls(request.getfixturevalue("postgres_url"))
        return pg_store
    if kind.startswith("django"):
        return make_django_store(kind, request)
    raise ValueError(kind)


def make_django_store(kind: str, request: pytest.FixtureRequest) -> ResultStore:
    """``result_backend = 'django-db'`` on the test project's SQLite database and, as
    ``django-db-postgres``, on PostgreSQL; ``'django-cache'`` on its local-memory cache."""
    django = request.getfixturevalue("django_inprocess")
    from celeriac.contrib.django.results.cache_store import CacheResultStore
    from celeriac.contrib.django.results.store import DatabaseResultStore

    if kind == "django-cache":
        return CacheResultStore("django-cache", options={"cache": "default"})
    if kind == "django-db-postgres":
        if "pg" not in django.aliases:
            import djangosite

            djangosite.require_postgres()
        return DatabaseResultStore("django-db", options={"database": "pg"})
    return DatabaseResultStore("django-db")


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    instance = make_broker(request.param, request)
    yield instance
    instance.close()


@pytest.fixture(params=STORES)
def result_store(request: pytest.FixtureRequest) -> Iterator[ResultStore]:
    instance = make_store(request.param, request)
    yield instance
    instance.close()
