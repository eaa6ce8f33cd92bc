"""Publishing is bounded in time, and ``retry=``/``retry_policy=`` are honoured (issue 9.4).

The servers here are plain TCP listeners on a free loopback port, started by
the test: one accepts connections and never answers (a hung Redis or
PostgreSQL, a half-open load balancer), one accepts and closes at once (a
crashing server). Each counts the connections made to it, which is the number
of attempts. For PostgreSQL a proxy in front of the real server also freezes
connections that already work, so a pooled connection stops answering mid-call.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from celeriac import Celery, group
from celeriac.brokers.redis.beat_store import RedisStore
from celeriac.exceptions import OperationalError
from needs import need


class Listener:
    """A loopback TCP server that either holds connections silently or closes them."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.server.settimeout(0.05)
        self.port = self.server.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.connections = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            self.connections += 1
            if self.answer == "close":
                conn.close()
            else:
                self._held.append(conn)  # read nothing, answer nothing

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for conn in self._held:
            conn.close()
        self.server.close()


@pytest.fixture
def silent() -> Iterator[Listener]:
    server = Listener("never")
    yield server
    server.close()


@pytest.fixture
def closing() -> Iterator[Listener]:
    server = Listener("close")
    yield server
    server.close()


def make_app(url: str, timeout: float = 1.0) -> Celery:
    app = Celery("deadline", broker=url, set_as_current=False)
    app.conf.broker_publish_timeout = timeout

    @app.task(name="deadline.add")
    def add(x: int, y: int) -> int:
        return x + y

    return app


def test_delay_against_a_silent_server_gives_up_at_the_deadline(silent: Listener) -> None:
    app = make_app(silent.url, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(OperationalError, match=f"127.0.0.1:{silent.port}"):
        app.tasks["deadline.add"].delay(2, 2)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 3.0, elapsed  # waited for the deadline, not for socket_timeout
    assert silent.connections >= 1


def test_group_publish_against_a_silent_server_gives_up_too(silent: Listener) -> None:
    app = make_app(silent.url, timeout=0.5)
    add = app.tasks["deadline.add"]
    started = time.monotonic()
    with pytest.raises(OperationalError):
        group(add.s(i, i) for i in range(3)).apply_async()
    assert time.monotonic() - started < 3.0


def test_retry_false_fails_at_once(closing: Listener) -> None:
    app = make_app(closing.url, timeout=5.0)
    started = time.monotonic()
    with pytest.raises(OperationalError, match="after 1 attempt"):
        app.tasks["deadline.add"].apply_async((1, 1), retry=False)
    assert time.monotonic() - started < 1.0
    assert closing.connections == 1


def test_retry_false_against_a_silent_server_is_one_attempt(silent: Listener) -> None:
    app = make_app(silent.url, timeout=0.5)
    with pytest.raises(OperationalError, match="after 1 attempt"):
        app.tasks["deadline.add"].apply_async((1, 1), retry=False)
    assert silent.connections == 1


def test_default_policy_retries_three_times(closing: Listener) -> None:
    app = make_app(closing.url, timeout=5.0)
    with pytest.raises(OperationalError, match="after 4 attempts"):
        app.tasks["deadline.add"].delay(1, 1)
    assert closing.connections == 4


def test_retry_policy_of_the_call_is_honoured(closing: Listener) -> None:
    app = make_app(closing.url, timeout=5.0)
    with pytest.raises(OperationalError, match="after 2 attempts"):
        app.tasks["deadline.add"].apply_async((1, 1), retry_policy={"max_retries": 1})
    assert closing.connections == 2


def test_task_publish_retry_setting_is_honoured(closing: Listener) -> None:
    app = make_app(closing.url, timeout=5.0)
    app.conf.task_publish_retry = False
    with pytest.raises(OperationalError, match="after 1 attempt"):
        app.send_task("deadline.add", (1, 1))
    assert closing.connections == 1


def test_beat_redis_store_retries_then_fails_clearly(closing: Listener) -> None:
    store = RedisStore(closing.url, prefix="beat-test:")
    with pytest.raises(OperationalError, match="beat list_entries failed after 4 attempts"):
        store.list_entries()
    assert closing.connections == 4


# -- PostgreSQL ------------------------------------------------------------------------------
PG_HOST, PG_PORT = "127.0.0.1", 5432


def need_psycopg() -> None:
    """psycopg comes with the test extra: skipped without it locally, a failure under CI."""
    if os.environ.get("CI"):
        __import__("psycopg")
    else:
        need("psycopg")


def pg_url(port: int, schema: str = "celeriac_deadline") -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/test?schema={schema}"


@pytest.mark.postgres
def test_postgres_delay_against_a_silent_server_gives_up_at_the_deadline(
        silent: Listener) -> None:
    need_psycopg()
    app = make_app(pg_url(silent.port), timeout=1.0)
    started = time.monotonic()
    with pytest.raises(OperationalError, match=f"127.0.0.1:{silent.port}"):
        app.tasks["deadline.add"].delay(2, 2)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 3.0, elapsed  # not the pool's wait, not libpq's connect_timeout
    assert silent.connections >= 1
    app.broker.close()


@pytest.mark.postgres
def test_postgres_group_and_retry_false_against_a_silent_server(silent: Listener) -> None:
    need_psycopg()
    app = make_app(pg_url(silent.port), timeout=0.5)
    add = app.tasks["deadline.add"]
    started = time.monotonic()
    with pytest.raises(OperationalError):
        group(add.s(i, i) for i in range(3)).apply_async()
    with pytest.raises(OperationalError, match="after 1 attempt"):
        add.apply_async((1, 1), retry=False)
    assert time.monotonic() - started < 3.0
    app.broker.close()


class FreezingProxy:
    """A TCP proxy to the real PostgreSQL that can stop forwarding (a server that hangs).

    While frozen, bytes in either direction are read and dropped, so a statement
    sent on an open connection never gets its reply; connections that lost bytes
    are closed when the proxy thaws (their protocol stream is broken).
    """

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.05)
        self.port = self.server.getsockname()[1]
        self.frozen = threading.Event()
        self._stop = threading.Event()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._poisoned: set[int] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                continue
            upstream = socket.create_connection((PG_HOST, PG_PORT))
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        ends = {client: upstream, upstream: client}
        try:
            while not self._stop.is_set():
                if not self.frozen.is_set() and id(client) in self._poisoned:
                    return
                ready, _, _ = select.select(list(ends), [], [], 0.05)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if self.frozen.is_set():
                        self._poisoned.add(id(client))
                        continue
                    ends[sock].sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.server.close()


@pytest.mark.postgres
def test_postgres_publish_on_a_connection_that_stops_answering_ends_at_the_deadline(
        pg_schema: str) -> None:
    """A pooled connection whose server stops answering mid-publish is cut at the
    deadline and dropped from the pool; the next publish works on a fresh one."""
    need_psycopg()  # pg_schema has checked that the server is up
    proxy = FreezingProxy()
    app = make_app(pg_url(proxy.port, pg_schema), timeout=1.0)
    add = app.tasks["deadline.add"]
    try:
        add.delay(1, 1)  # creates the schema; the pool now holds a working connection
        proxy.frozen.set()
        started = time.monotonic()
        with pytest.raises(OperationalError, match="no reply before the deadline"):
            add.delay(2, 2)
        assert 0.9 <= time.monotonic() - started < 3.0
        proxy.frozen.clear()
        add.delay(3, 3)
        assert app.broker.stats("celery").ready == 2  # the frozen insert never arrived
    finally:
        app.broker.close()
        proxy.close()


@pytest.mark.postgres
def test_postgres_beat_store_retries_then_fails_clearly(closing: Listener) -> None:
    need_psycopg()
    from celeriac.brokers.postgres.beat_store import PostgresStore

    store = PostgresStore(pg_url(closing.port), options={"retry_policy": {"max_retries": 1}})
    try:
        with pytest.raises(OperationalError, match="beat list_entries failed after 2 attempts"):
            store.list_entries()
    finally:
        store.close()
