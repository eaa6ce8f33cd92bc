"""Shared test fixtures: service checks that skip locally and fail under CI=true."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
PG_HOST, PG_PORT = "127.0.0.1", 5432
RABBITMQ_HOST, RABBITMQ_PORT = "127.0.0.1", 5672
#: The shared server's database tests use; each test gets its own schema in it.
PG_BASE_URL = os.environ.get("CELERIAC_TEST_PG_URL", f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test")
#: Redis database the test suite owns; every test also uses a unique key prefix.
REDIS_TEST_DB = int(os.environ.get("CELERIAC_TEST_REDIS_DB", "11"))

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:  # ``from needs import need`` in every tier
    sys.path.insert(0, _TESTS)
import rabbit  # noqa: E402 (tests/ on sys.path first)


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


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A private Redis Cluster (3 masters + 3 replicas) for the session, on free loopback
    ports; killed (by the PIDs it started) and removed afterwards. Tests that kill a
    master use :func:`redis_cluster_private` instead, so this one stays whole."""
    import redisnodes

    cluster = redisnodes.start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster: Any) -> str:
    """``redis+cluster://`` URL of the session's cluster (use with ``key_prefix``)."""
    return str(redis_cluster.url)


@pytest.fixture
def cluster_key_prefix(redis_cluster: Any) -> Iterator[str]:
    """A unique key prefix on the session's cluster; its keys are deleted afterwards."""
    import redisnodes

    prefix = f"celeriac-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    if redis_cluster.healthy():
        redisnodes.delete_keys(redis_cluster.masters(), f"*{prefix}*")


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


class VhostPool:
    """RabbitMQ virtual hosts for tests, made and deleted with ``rabbitmqctl eval`` in
    batches (one ``rabbitmqctl`` call takes seconds, far more on a loaded machine).

    A test gets a vhost to itself; afterwards it is emptied (every queue celeriac
    declared there, found through its ``celeriac.queue-catalog`` catalog, and Celery's
    ``celery`` queue are deleted, the delay levels purged) and handed to a later test
    of the same session, or set aside when emptying fails. Every vhost made is
    deleted when the session ends.
    """

    BATCH = 2

    def __init__(self) -> None:
        self.free: list[str] = []
        self.made: list[str] = []

    @staticmethod
    def _eval(code: str) -> None:
        import subprocess

        done = subprocess.run(["rabbitmqctl", "eval", code], capture_output=True, text=True,
                              timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl eval failed: {done.stdout} {done.stderr}")

    @staticmethod
    def _binaries(names: list[str]) -> str:
        return ", ".join(f'<<"{name}">>' for name in names)

    def take(self) -> str:
        if not self.free:
            batch = [f"celeriac-test-{uuid.uuid4().hex[:12]}" for _ in range(self.BATCH)]
            self.made.extend(batch)
            self._eval(
                "[begin rabbit_vhost:add(V, <<\"celeriac-tests\">>), "
                "rabbit_auth_backend_internal:set_permissions(<<\"guest\">>, V, <<\".*\">>, "
                "<<\".*\">>, <<\".*\">>, <<\"celeriac-tests\">>) end "
                f"|| V <- [{self._binaries(batch)}]], ok.")
            self.free.extend(batch)
        return self.free.pop()

    def give_back(self, vhost: str) -> None:
        """Empty ``vhost`` and keep it for another test (dropped if that fails)."""
        try:
            empty_vhost(vhost)
        except Exception:
            return
        self.free.append(vhost)

    def delete_all(self) -> None:
        if self.made:
            self._eval("[rabbit_vhost:delete(V, <<\"celeriac-tests\">>) || "
                       f"V <- [{self._binaries(self.made)}]], ok.")
            self.made, self.free = [], []


def empty_vhost(vhost: str) -> None:
    """Delete the queues celeriac (and Celery's default) declared in ``vhost``; purge the
    delay levels, so no message of one test reaches the next."""
    import amqp

    conn = amqp.Connection(f"{RABBITMQ_HOST}:{RABBITMQ_PORT}", virtual_host=vhost,
                           connect_timeout=10)
    conn.connect()
    try:
        names = {"celery"}
        chan = conn.channel()
        chan.queue_declare("celeriac.queue-catalog", durable=True, auto_delete=False)
        while True:
            got = chan.basic_get("celeriac.queue-catalog", no_ack=True)
            if got is None:
                break
            names.add(bytes(got.body).decode())
        for name in sorted(names):
            for queue in (name, f"celeriac.dead.{name}"):
                chan.queue_delete(queue)
        chan.queue_delete("celeriac.queue-catalog")
        for level in range(28):
            try:
                chan.queue_purge(f"celery_delayed_{level}")
            except amqp.exceptions.NotFound:
                chan = conn.channel()
    finally:
        conn.close()


@pytest.fixture(scope="session")
def rabbitmq_vhosts() -> Iterator[VhostPool]:
    pool = VhostPool()
    yield pool
    if service_up(RABBITMQ_HOST, RABBITMQ_PORT):
        pool.delete_all()


@pytest.fixture
def rabbitmq_url(rabbitmq_vhosts: VhostPool) -> Iterator[str]:
    """``amqp://`` URL of an empty virtual host the test has to itself (guest/guest)."""
    require_service("RabbitMQ", RABBITMQ_HOST, RABBITMQ_PORT)
    vhost = rabbitmq_vhosts.take()
    yield f"amqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}/{vhost}"
    forget_kombu_pools(vhost)
    rabbitmq_vhosts.give_back(vhost)


def forget_kombu_pools(vhost: str) -> None:
    """Close and drop kombu's process-wide connection and producer pools for ``vhost``.

    ``app.close()`` leaves them open, keyed by broker URL, each connection with its
    cache of what it declared. The vhost goes to a later test emptied (its ``celery``
    queue deleted): that test's Celery client would reuse the cached connection, skip
    declaring the queue and publish messages RabbitMQ cannot route, dropped until the
    worker binds the queue, so part of a burst (or all of it) never arrives."""
    pools = sys.modules.get("kombu.pools")
    if pools is None:
        return
    for group in pools._groups:
        for key, pool in list(group.items()):
            connections = getattr(pool, "connections", pool)  # a producer pool's own
            if getattr(getattr(connections, "connection", None), "virtual_host", None) == vhost:
                pool.force_close_all()
                dict.__delitem__(group, key)


@pytest.fixture(scope="module")
def rabbitmq_url_module(rabbitmq_vhosts: VhostPool) -> Iterator[str]:
    """A RabbitMQ vhost shared by one test module, emptied afterwards."""
    require_service("RabbitMQ", RABBITMQ_HOST, RABBITMQ_PORT)
    vhost = rabbitmq_vhosts.take()
    yield f"amqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}/{vhost}"
    forget_kombu_pools(vhost)
    rabbitmq_vhosts.give_back(vhost)


@pytest.fixture
def rabbitmq_channel(rabbitmq_url: str) -> Iterator[Callable[..., Any]]:
    """``open(queues=(), exchanges=())``: a plain py-amqp channel on the test's vhost
    (``rabbitmq_url``), to declare and look at what RabbitMQ holds. Afterwards the named
    queues and exchanges are deleted (the vhost goes to a later test: leave nothing of
    the test's own) and the connection closed."""
    import amqp

    conns: list[tuple[amqp.Connection, Sequence[str], Sequence[str]]] = []

    def open_channel(queues: Sequence[str] = (), exchanges: Sequence[str] = ()) -> Any:
        conn = rabbit.connect(rabbitmq_url)
        conns.append((conn, queues, exchanges))
        return conn.channel()

    yield open_channel
    for conn, queues, exchanges in conns:
        try:
            chan = conn.channel()  # the test's channel may be closed by a channel error
            for queue in queues:
                chan.queue_delete(queue)
            for exchange in exchanges:
                chan.exchange_delete(exchange)
        finally:
            conn.close()


@pytest.fixture
def amqp_brokers(rabbitmq_url: str) -> Iterator[Callable[..., Any]]:
    """``make(lease_seconds=1.0, **options)``: an ``AMQPBroker`` on the test's vhost with
    those transport options; each one made is closed afterwards."""
    from celeriac.brokers.amqp.broker import AMQPBroker

    made: list[AMQPBroker] = []

    def make(lease_seconds: float | None = 1.0, **options: Any) -> AMQPBroker:
        broker = (AMQPBroker(rabbitmq_url, options=options) if lease_seconds is None else
                  AMQPBroker(rabbitmq_url, lease_seconds=lease_seconds, options=options))
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


@pytest.fixture
def consume() -> Iterator[Callable[..., Any]]:
    """``start(app, pool, **options)``: a worker ``Consumer`` of the ``celery`` queue
    running in a thread (polling every 50 ms); afterwards each one is stopped, its thread
    joined and its pool shut down."""
    import threading

    from celeriac.worker.consumer import Consumer

    running: list[tuple[Consumer, threading.Thread]] = []

    def start(app: Any, pool: Any, **options: Any) -> Consumer:
        consumer = Consumer(app, ["celery"], pool, poll_timeout=0.05, **options)
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        running.append((consumer, thread))
        return consumer

    yield start
    for consumer, thread in running:
        consumer.stop()
        thread.join(10)
        consumer.pool.shutdown()


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

