"""Publishing is bounded in time, and ``retry=``/``retry_policy=`` are honoured (issue 9.4).

The servers here are plain TCP listeners on a free loopback port, started by
the test: one accepts connections and never answers (a hung Redis, a
half-open load balancer), one accepts and closes at once (a crashing server).
Each counts the connections made to it, which is the number of attempts.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from celeriac import Celery, group
from celeriac.brokers.redis.beat_store import RedisStore
from celeriac.exceptions import OperationalError


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
