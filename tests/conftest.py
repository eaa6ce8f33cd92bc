"""Shared test fixtures: service checks that skip locally and fail under CI=true."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
PG_HOST, PG_PORT = "127.0.0.1", 5432
#: The shared server's database tests use; each test gets its own schema in it.
PG_BASE_URL = os.environ.get("CELERIAC_TEST_PG_URL", f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test")
#: Redis database the test suite owns; every test also uses a unique key prefix.
REDIS_TEST_DB = int(os.environ.get("CELERIAC_TEST_REDIS_DB", "11"))

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:  # ``from needs import need`` in every tier
    sys.path.insert(0, _TESTS)


def service_up(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a service is unreachable; fail instead when CI=true."""
    if service_up(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(message + " (CI=true: services are required)")
    pytest.skip(message)


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_TEST_DB}"


@pytest.fixture
def key_prefix() -> Iterator[str]:
    """A unique key prefix; tests that write to Redis delete keys under it afterwards."""
    prefix = f"celeriac-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    if service_up(REDIS_HOST, REDIS_PORT):
        try:
            import redis
        except ImportError:
            return
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_TEST_DB)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def sqlite_path(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return str(tmp_path / "celeriac.sqlite3")


def drop_pg_schema(schema: str, base_url: str = PG_BASE_URL) -> None:
    """Drop a test schema and everything in it (no-op when the driver is missing)."""
    try:
        import psycopg
    except ImportError:
        return
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@contextmanager
def pg_test_schema() -> Iterator[str]:
    """A unique schema name in the shared PostgreSQL ``test`` database, dropped afterwards."""
    require_service("PostgreSQL", PG_HOST, PG_PORT)
    schema = f"celeriac_test_{uuid.uuid4().hex[:12]}"
    try:
        yield schema
    finally:
        drop_pg_schema(schema)


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A schema of the test's own (see :func:`pg_test_schema`)."""
    with pg_test_schema() as schema:
        yield schema


@pytest.fixture
def postgres_url(pg_schema: str) -> str:
    """A broker/result URL whose tables live in the test's own schema (``?schema=``)."""
    return f"{PG_BASE_URL}?schema={pg_schema}"


@pytest.fixture(scope="module")
def postgres_url_module() -> Iterator[str]:
    """A PostgreSQL URL with a schema shared by one test module, dropped afterwards."""
    with pg_test_schema() as schema:
        yield f"{PG_BASE_URL}?schema={schema}"


_DJANGO_TESTS = str(Path(__file__).resolve().parent / "django")


def _djangosite() -> Any:
    if _DJANGO_TESTS not in sys.path:
        sys.path.insert(0, _DJANGO_TESTS)
    import djangosite

    return djangosite


def _postgres_usable() -> bool:
    import importlib.util

    return service_up("127.0.0.1", 5432) and importlib.util.find_spec("psycopg") is not None


@pytest.fixture(scope="session")
def django_inprocess(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Django set up in this process with the test project (tests/django_project);
    the PostgreSQL alias ``pg`` exists when PostgreSQL is reachable."""
    site = _djangosite()
    site.require_django()
    with_pg = _postgres_usable()
    if not with_pg and IN_CI:
        site.require_postgres()  # fails with the reason
    state, teardown = site.setup_inprocess(tmp_path_factory.mktemp("django"), with_pg)
    yield state
    teardown()
