"""Outage reporting and patient calls (``celeriac.retry``) and the worker's Weather/Outbox.

The process-level pieces behind "broker outages are weather, not death": a call that
gives up reports the server failing once, the next success reports it back, a patient
call waits the outage out (and gives up on a cold shutdown), a call with a deadline
still raises, and the supervisor's outbox keeps steps in order until the server answers.
The end-to-end behaviour is tested on real processes in
``tests/acceptance/test_broker_outage.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest

from celeriac import retry
from celeriac.exceptions import OperationalError
from celeriac.retry import RetryPolicy
from celeriac.worker.outage import Outbox, Weather

FAST = RetryPolicy(max_retries=2, interval_start=0.0, interval_step=0.01, interval_max=0.01)


class Server:
    """Fails with ConnectionError while ``down``; counts attempts."""

    def __init__(self) -> None:
        self.down = False
        self.attempts = 0

    def call(self) -> str:
        self.attempts += 1
        if self.down:
            raise ConnectionError("refused")
        return "ok"


def run(server: Server, policy: RetryPolicy = FAST) -> str:
    return retry.call(server.call, policy, retry_on=(ConnectionError,), what="ack",
                      where="Test at server")


@pytest.fixture
def weather() -> Iterator[Weather]:
    watch = Weather()
    watch.confirm = 0.0  # "back" logged at once (see test_a_flap_is_one_outage)
    previous = retry.watch_outages(watch)
    yield watch
    watch.give_up()
    retry.watch_outages(previous)


def lines(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records)


def test_one_line_when_lost_and_one_when_back(weather: Weather,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "celeriac.worker")
    server = Server()
    server.down = True
    for _ in range(5):
        with pytest.raises(OperationalError, match="Test at server: ack failed after 3"):
            run(server)
    assert retry.failing().keys() == {"Test at server"}
    server.down = False
    for _ in range(3):
        assert run(server) == "ok"
    assert lines(caplog, "Lost the connection to Test at server (ack: refused)") == 1
    assert lines(caplog, "Connection to Test at server is back after") == 1
    assert retry.failing() == {}
    assert weather.outages == 1


def test_patient_call_waits_for_the_server(weather: Weather) -> None:
    server = Server()
    server.down = True
    threading.Timer(0.5, lambda: setattr(server, "down", False)).start()
    with retry.patient():
        assert run(server) == "ok"
    assert server.attempts > 3  # waited past its policy
    assert not weather.is_down()


def test_patient_call_gives_up_on_cold_shutdown(weather: Weather) -> None:
    server = Server()
    server.down = True
    threading.Timer(0.3, weather.give_up).start()
    started = time.monotonic()
    with retry.patient(), pytest.raises(OperationalError, match="ack failed"):
        run(server)
    assert time.monotonic() - started < 10


def test_calls_with_a_deadline_or_outside_patience_still_raise(weather: Weather) -> None:
    server = Server()
    server.down = True
    with retry.patient(), pytest.raises(OperationalError, match=r"deadline|failed after"):
        run(server, RetryPolicy(max_retries=None, interval_step=0.05, timeout=0.3))
    with retry.patient(), retry.patient(False), pytest.raises(OperationalError):
        run(server)


def test_without_a_watch_a_patient_call_raises() -> None:
    previous = retry.watch_outages(None)
    try:
        server = Server()
        server.down = True
        with retry.patient(), pytest.raises(OperationalError):
            run(server)
    finally:
        retry.watch_outages(previous)


def test_inner_call_leaves_the_verdict_to_the_outer_one(weather: Weather) -> None:
    server = Server()
    server.down = True
    calls = []

    def outer() -> str:
        calls.append(1)
        if len(calls) == 1:  # the inner call fails once, the outer retries it
            try:
                return run(server)
            finally:
                assert retry.failing() == {}, "an inner attempt is not an outage"
                server.down = False
        return run(server)

    assert retry.call(outer, FAST, retry_on=(OperationalError,), what="publish",
                      where="outer") == "ok"
    assert not weather.is_down()


def test_streak_reports_from_the_third_failure(weather: Weather) -> None:
    streak = retry.Streak("Test at receive", "receive")
    streak.failed(ConnectionError("stale socket"))
    streak.failed(ConnectionError("refused"))
    assert not weather.is_down()
    streak.failed(ConnectionError("refused"))
    assert weather.is_down()
    streak.ok()
    assert not weather.is_down()


def test_children_reports_make_one_outage_for_the_node(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "celeriac.worker")
    node = Weather()
    node.confirm = 0.0
    node.observe_all({101: b"Redis at x\tack: refused", 102: b"Redis at x\tset: refused"})
    node.failing("Redis at x", "renew", ConnectionError("refused"))
    node.observe(101, None)
    node.working("Redis at x")
    assert node.is_down()  # child 102 still fails
    node.observe(102, None)
    assert not node.is_down()
    assert lines(caplog, "Lost the connection to Redis at x (ack: refused)") == 1
    assert lines(caplog, "Connection to Redis at x is back") == 1


def test_a_child_reports_instead_of_logging(caplog: pytest.LogCaptureFixture) -> None:
    reported: list[str | None] = []
    child = Weather(report=reported.append)
    child.failing("Redis at x", "ack", ConnectionError("refused"))
    child.failing("Redis at x", "set", ConnectionError("refused"))
    child.working("Redis at x")
    assert reported == ["Redis at x\tack: refused", None]
    assert not [r for r in caplog.records if "connection" in r.getMessage().lower()]


def test_outbox_keeps_steps_in_order_until_the_server_answers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    server = Server()
    server.down = True
    done: list[str] = []

    def step(name: str) -> None:
        if server.down:
            raise OperationalError("Redis at x: expire_owner failed")
        done.append(name)

    outbox = Outbox()
    outbox.run("expire a", lambda: step("a"))
    outbox.run("ack b", lambda: step("b"))
    assert done == [] and len(outbox) == 2
    server.down = False
    outbox.flush()  # not yet: retried once a second
    assert done == []
    monkeypatch.setattr("celeriac.worker.outage.OUTBOX_RETRY", 0.0)
    outbox.flush(force=True)
    assert done == ["a", "b"] and len(outbox) == 0
    outbox.run("ack c", lambda: step("c"))  # nothing waits: taken now
    assert done == ["a", "b", "c"]


def test_outbox_drops_a_step_that_fails_otherwise(caplog: pytest.LogCaptureFixture) -> None:
    outbox = Outbox()
    done: list[str] = []
    outbox.run("store a result", lambda: 1 / 0)
    outbox.run("ack b", lambda: done.append("b"))
    assert done == ["b"] and len(outbox) == 0
    assert lines(caplog, "Could not store a result") == 1


def test_a_flap_is_one_outage(caplog: pytest.LogCaptureFixture) -> None:
    """Stale connections failing right after a restart continue the same outage: its
    return is logged once the server kept working for ``confirm`` seconds."""
    caplog.set_level(logging.WARNING, "celeriac.worker")
    node = Weather()
    node.confirm = 0.2
    node.failing("Redis at x", "ack", ConnectionError("refused"))
    node.working("Redis at x")
    node.failing("Redis at x", "ack", ConnectionError("stale socket"))
    node.working("Redis at x")
    node.tick()
    assert lines(caplog, "Connection to Redis at x is back") == 0
    time.sleep(0.3)
    node.tick()
    assert lines(caplog, "Lost the connection to Redis at x") == 1
    assert lines(caplog, "Connection to Redis at x is back") == 1
    assert node.outages == 1


def test_an_attempt_begun_before_the_server_came_back_is_no_new_outage(
        weather: Weather, caplog: pytest.LogCaptureFixture) -> None:
    """A call that waited through the return (a pooled connection asked for while the
    server was down) and failed after another call found it back starts no second
    outage; an attempt begun after the return does."""
    caplog.set_level(logging.WARNING, "celeriac.worker")
    server = Server()
    server.down = True
    with pytest.raises(OperationalError):
        run(server)
    began, back = threading.Event(), threading.Event()

    def straggler() -> str:
        began.set()
        back.wait(5)
        raise ConnectionError("couldn't get a connection after 3.00 sec")

    def wait_through_the_return() -> None:
        with pytest.raises(OperationalError):
            retry.call(straggler, RetryPolicy(max_retries=0), retry_on=(ConnectionError,),
                       what="query", where="Test at server")

    thread = threading.Thread(target=wait_through_the_return)
    thread.start()
    began.wait(5)
    server.down = False
    assert run(server) == "ok"  # the server is back
    back.set()
    thread.join(5)
    assert retry.failing() == {}
    assert lines(caplog, "Lost the connection to Test at server") == 1
    server.down = True  # down again: a new attempt reports it
    with pytest.raises(OperationalError):
        run(server)
    assert retry.failing().keys() == {"Test at server"}
    server.down = False
    assert run(server) == "ok"
