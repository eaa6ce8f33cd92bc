"""The one retry helper (celeriac.retry) and how publishing uses it on every broker."""

from __future__ import annotations

import time
from typing import Any
from unittest import mock

import pytest

from celeriac import Celery, group
from celeriac.exceptions import ImproperlyConfigured, OperationalError
from celeriac.retry import RetryPolicy, call, time_left

NO_PAUSE = {"interval_start": 0, "interval_step": 0, "interval_max": 0}


class Flaky(Exception):
    pass


def failing(times: int, calls: list[float]) -> Any:
    def operation() -> str:
        calls.append(time.monotonic())
        if len(calls) <= times:
            raise Flaky(f"failure {len(calls)}")
        return "done"
    return operation


def test_policy_reads_celery_retry_policy() -> None:
    policy = RetryPolicy.from_celery({"max_retries": 2, "interval_start": 0.5,
                                      "interval_step": 0.25, "interval_max": 0.8}, timeout=3)
    assert list(policy.intervals()) == [0.5, 0.75]
    assert policy.timeout == 3
    assert list(policy.once().intervals()) == []
    assert list(RetryPolicy.from_celery({"max_retries": 4, **NO_PAUSE}).intervals()) == [0.0] * 4


def test_policy_refuses_unknown_keys() -> None:
    with pytest.raises(ValueError, match="max_retires"):
        RetryPolicy.from_celery({"max_retires": 1})


def test_call_retries_then_succeeds_and_sleeps_the_intervals() -> None:
    calls: list[float] = []
    slept: list[float] = []
    result = call(failing(2, calls), RetryPolicy(interval_start=0.1, interval_step=0.1),
                  retry_on=(Flaky,), what="work", where="here", sleep=slept.append)
    assert result == "done" and len(calls) == 3 and slept == [0.1, 0.2]


def test_call_gives_up_with_operational_error_naming_what_and_where() -> None:
    calls: list[float] = []
    with pytest.raises(OperationalError, match=r"^here: work failed after 4 attempts: failure 4"):
        call(failing(10, calls), RetryPolicy(**NO_PAUSE), retry_on=(Flaky,), what="work",
             where="here")
    assert len(calls) == 4


def test_other_errors_are_not_retried() -> None:
    calls: list[float] = []

    def broken() -> None:
        calls.append(0)
        raise KeyError("bug")

    with pytest.raises(KeyError):
        call(broken, RetryPolicy(), retry_on=(Flaky,), what="work", where="here")
    assert calls == [0]


def test_deadline_stops_retrying_and_is_visible_underneath() -> None:
    seen: list[float | None] = []

    def operation() -> None:
        seen.append(time_left())
        raise Flaky("no")

    started = time.monotonic()
    with pytest.raises(OperationalError, match="x: w failed after"):
        call(operation, RetryPolicy(max_retries=None, interval_start=0.05, interval_step=0,
                                    timeout=0.3), retry_on=(Flaky,), what="w", where="x")
    assert time.monotonic() - started < 1.0
    assert seen[0] is not None and 0 < seen[0] <= 0.3
    assert time_left() is None  # the deadline ends with the call


def test_nested_call_makes_one_attempt_inside_the_outer_policy() -> None:
    """One retry layer: the producer's policy, not the broker's on top of it."""
    inner_calls: list[float] = []
    outer_calls: list[float] = []

    def inner() -> None:
        call(failing(100, inner_calls), RetryPolicy(**NO_PAUSE), retry_on=(Flaky,),
             what="inner", where="broker")

    def outer() -> None:
        outer_calls.append(0)
        inner()

    with pytest.raises(OperationalError):
        call(outer, RetryPolicy(max_retries=2, **NO_PAUSE), retry_on=(OperationalError,),
             what="publish", where="app")
    assert len(outer_calls) == 3 and len(inner_calls) == 3


# -- publishing on the embedded brokers -------------------------------------------------
@pytest.fixture(params=["memory", "sqlite"])
def app(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/b.sqlite3"
    app = Celery("retrying", broker=url, set_as_current=False)
    app.conf.task_publish_retry_policy = {"max_retries": 3, **NO_PAUSE}

    @app.task(name="retrying.add")
    def add(x: int, y: int) -> int:
        return x + y

    yield app
    app.close()


def publish_calls(app: Celery, method: str, action: Any) -> int:
    failure = OperationalError("down")
    with mock.patch.object(app.broker, method, side_effect=failure) as patched, \
            pytest.raises(OperationalError, match="down"):
        action()
    return patched.call_count


def test_default_retries_on_every_broker(app: Celery) -> None:
    assert publish_calls(app, "publish", lambda: app.tasks["retrying.add"].delay(1, 1)) == 4


def test_retry_false_is_one_attempt(app: Celery) -> None:
    add = app.tasks["retrying.add"]
    assert publish_calls(app, "publish", lambda: add.apply_async((1, 1), retry=False)) == 1


def test_retry_policy_of_the_call(app: Celery) -> None:
    add = app.tasks["retrying.add"]
    action = lambda: add.apply_async((1, 1), retry_policy={"max_retries": 1})  # noqa: E731
    assert publish_calls(app, "publish", action) == 2


def test_task_publish_retry_false(app: Celery) -> None:
    app.conf.task_publish_retry = False
    assert publish_calls(app, "publish", lambda: app.send_task("retrying.add", (1, 1))) == 1


def test_group_publish_honours_retry_false(app: Celery) -> None:
    add = app.tasks["retrying.add"]
    action = lambda: group(add.s(1, 1), add.s(2, 2)).apply_async(retry=False)  # noqa: E731
    assert publish_calls(app, "publish_many", action) == 1


def test_publish_deadline_setting_bounds_the_retries(app: Celery) -> None:
    app.conf.task_publish_retry_policy = {"max_retries": None, "interval_start": 0.05,
                                          "interval_step": 0, "interval_max": 0.05}
    app.conf.broker_publish_timeout = 0.3
    started = time.monotonic()
    calls = publish_calls(app, "publish", lambda: app.tasks["retrying.add"].delay(1, 1))
    assert calls > 1 and time.monotonic() - started < 2.0


def test_connection_goes_to_publish_in_transaction_once(app: Celery) -> None:
    """``apply_async(connection=)`` (and a group's) takes the transactional path, one
    attempt (a failed statement aborts the caller's transaction), never ``publish``."""
    add = app.tasks["retrying.add"]
    conn = object()
    assert publish_calls(app, "publish_in_transaction",
                         lambda: add.apply_async((1, 1), connection=conn)) == 1
    with mock.patch.object(app.broker, "publish_in_transaction") as joined, \
            mock.patch.object(app.broker, "publish") as plain:
        add.apply_async((1, 1), connection=conn)
        group(add.s(1, 1), add.s(2, 2)).apply_async(connection=conn)
    assert plain.call_count == 0
    assert [(call.args[0], len(call.args[1])) for call in joined.call_args_list] == [
        (conn, 1), (conn, 2)]


def test_connection_bypasses_publish_interceptors(app: Celery) -> None:
    """An explicit ``connection=`` is where the caller wants the message: an
    interceptor (the Django outbox) is not consulted for it."""
    from celeriac import hooks

    seen: list[int] = []

    def take(_app: Any, items: Any) -> bool:
        seen.append(len(items))
        return True

    hooks.register_publish_interceptor(take)
    try:
        with mock.patch.object(app.broker, "publish_in_transaction") as joined:
            app.tasks["retrying.add"].apply_async((1, 1), connection=object())
            app.tasks["retrying.add"].delay(2, 2)
    finally:
        hooks.unregister_publish_interceptor(take)
    assert joined.call_count == 1 and seen == [1]
    assert app.broker.stats("celery").ready == 0  # the interceptor took the plain delay()


def test_connection_on_a_broker_outside_the_database_is_refused(app: Celery) -> None:
    add = app.tasks["retrying.add"]
    with pytest.raises(ImproperlyConfigured, match="needs the PostgreSQL broker"):
        add.apply_async((1, 1), connection=object())
    assert app.broker.stats("celery").ready == 0


def test_a_first_attempt_made_outside_counts_as_the_first() -> None:
    """``failed=``: a hot path made the first attempt before entering ``call`` (see
    ``retry.at_top``); the policy's retries and deadline go on from it."""
    from celeriac.retry import at_top

    assert at_top()
    calls: list[float] = []
    with pytest.raises(OperationalError, match=r"here: work failed after 3 attempts"):
        call(failing(10, calls), RetryPolicy(max_retries=2, **NO_PAUSE), retry_on=(Flaky,),
             what="work", where="here", failed=Flaky("first"))
    assert len(calls) == 2  # the two retries; the first attempt was the caller's
    calls.clear()
    assert call(failing(0, calls), RetryPolicy(max_retries=2, **NO_PAUSE), retry_on=(Flaky,),
                what="work", where="here", failed=Flaky("first")) == "done"
    assert len(calls) == 1
    # the deadline counts from the first attempt: none is left, so no retry is made
    calls.clear()
    with pytest.raises(OperationalError, match="deadline reached"):
        call(failing(0, calls), RetryPolicy(max_retries=5, interval_start=0.01,
                                            interval_step=0, timeout=0.05),
             retry_on=(Flaky,), what="w", where="x", failed=Flaky("first"),
             started=time.monotonic() - 1)
    assert calls == []


def test_inside_a_call_no_first_attempt_is_made_outside() -> None:
    from celeriac.retry import at_top, quick

    seen: list[bool] = []
    call(lambda: seen.append(at_top()), RetryPolicy(), retry_on=(Flaky,), what="w", where="x")
    with quick(1.0):
        seen.append(at_top())
    assert seen == [False, False] and at_top()
