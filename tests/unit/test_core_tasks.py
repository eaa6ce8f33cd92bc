"""Tasks: decorators and options, hooks, ``self.request``, ``retry`` and ``update_state``.

Messages go through the in-memory broker and are run by the worker's own job
runner in this process (no subprocess), so the request the task sees is built
from a real decoded message.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from unittest import mock

import pytest

from celeriac import Celery, Task, shared_task, states
from celeriac.app.trace import Outcome
from celeriac.brokers.base import Delivery
from celeriac.exceptions import Ignore, MaxRetriesExceededError, Retry
from celeriac.messages import Message
from celeriac.worker.job import JobRunner
from celeriac.worker.leases import LeaseKeeper


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("tasks", broker="memory://", backend="memory://")
    yield app
    app.close()


@contextlib.contextmanager
def clock_shifted(shift: float) -> Iterator[None]:
    """Make ``time.time()`` (broker and worker clocks) run ``shift`` seconds ahead."""
    if not shift:
        yield
        return
    real = time.time
    with mock.patch("time.time", lambda: real() + shift):
        yield


def receive(app: Celery, queues: tuple[str, ...] = ("celery",), shift: float = 0.0
            ) -> list[Delivery]:
    """Lease everything ready on ``queues``, ``shift`` seconds in the future."""
    with clock_shifted(shift):
        return app.broker.receive(list(queues), owner="test", limit=100, timeout=0)


def work(app: Celery, queues: tuple[str, ...] = ("celery",), shift: float = 0.0,
         hostname: str = "w1@example") -> list[Outcome]:
    """Run every ready message through the worker's JobRunner; return the outcomes."""
    with clock_shifted(shift):
        deliveries = receive(app, queues)
        keeper = LeaseKeeper(app.broker, interval=60)
        keeper.hold(deliveries)
        runner = JobRunner(app, keeper, hostname)
        outcomes = []
        for delivery in deliveries:
            job = runner.prepare(delivery, set())
            assert job is not None, delivery
            outcomes.append(runner.execute(job))
    return outcomes


def messages(app: Celery, queues: tuple[str, ...] = ("celery",),
             shift: float = 0.0) -> list[Message]:
    return [d.message for d in receive(app, queues, shift)]


# -- decorators ---------------------------------------------------------------------------
def test_app_task_without_and_with_arguments(app: Celery) -> None:
    @app.task
    def plain(x: int) -> int:
        return x + 1

    @app.task()
    def empty_parens(x: int) -> int:
        return x + 2

    @app.task(name="custom.name")
    def named(x: int) -> int:
        return x + 3

    assert plain.name == f"{__name__}.plain"
    assert empty_parens.name == f"{__name__}.empty_parens"
    assert named.name == "custom.name"
    assert isinstance(plain, Task)
    assert app.tasks["custom.name"] is named
    assert (plain(1), empty_parens(1), named(1)) == (2, 3, 4)
    assert plain.__doc__ is None and plain.__wrapped__(1) == 2


def test_shared_task_without_and_with_arguments(app: Celery) -> None:
    @shared_task
    def s_plain() -> str:
        return "p"

    @shared_task(name="shared.custom", bind=True, max_retries=7)
    def s_opts(self: Task) -> str:
        return str(self.max_retries)

    assert s_plain.name == f"{__name__}.s_plain"
    assert app.tasks["shared.custom"].max_retries == 7
    assert s_plain() == "p"
    assert s_opts() == "7"
    assert s_opts.delay().id


def test_every_task_option_becomes_an_attribute(app: Celery) -> None:
    def failure_hook(self: Task, *args: Any) -> None:
        """On failure."""

    class Base(Task):
        custom = "base"

    @app.task(name="opts.all", bind=True, base=Base, max_retries=5, default_retry_delay=7,
              autoretry_for=(KeyError,), dont_autoretry_for=(IndexError,),
              retry_kwargs={"max_retries": 2}, retry_backoff=3, retry_backoff_max=50,
              retry_jitter=False, acks_late=False, reject_on_worker_lost=True,
              ignore_result=True, time_limit=30, soft_time_limit=20, track_started=True,
              queue="q1", priority=3, expires=60, rate_limit="10/m", serializer="json",
              typing=False, on_failure=failure_hook)
    def everything(self: Task) -> str:
        return self.name or ""

    t = app.tasks["opts.all"]
    assert isinstance(t, Base) and t.custom == "base"
    expected = dict(max_retries=5, default_retry_delay=7, autoretry_for=(KeyError,),
                    dont_autoretry_for=(IndexError,), retry_kwargs={"max_retries": 2},
                    retry_backoff=3, retry_backoff_max=50, retry_jitter=False,
                    acks_late=False, reject_on_worker_lost=True, ignore_result=True,
                    time_limit=30, soft_time_limit=20, track_started=True, queue="q1",
                    priority=3, expires=60, rate_limit="10/m", serializer="json",
                    typing=False)
    for attr, value in expected.items():
        assert getattr(t, attr) == value, attr
    assert type(t).on_failure is failure_hook
    assert everything() == "opts.all"


def test_unknown_options_become_attributes_like_celery(app: Celery) -> None:
    @app.task(custom_flag=True)
    def flagged() -> bool:
        return bool(flagged.custom_flag)

    assert flagged() is True


def test_misspelled_option_is_reported(app: Celery) -> None:
    with pytest.warns(UserWarning, match="max_retires"):
        @app.task(max_retires=3)
        def typo() -> None:
            return None


def test_defaults_from_configuration(app: Celery) -> None:
    @app.task
    def configured() -> None:
        return None

    # as with Celery's lazy binding, settings changed after @app.task still apply
    app.conf.update(task_track_started=True, task_time_limit=9, task_acks_late=False)

    @app.task(acks_late=True)
    def overridden() -> None:
        return None

    assert configured.track_started is True
    assert configured.time_limit == 9
    assert configured.acks_late is False
    assert overridden.acks_late is True
    assert Task.max_retries == 3 and Task.default_retry_delay == 180


def test_acks_late_defaults_to_true(app: Celery) -> None:
    @app.task
    def t() -> None:
        return None

    assert t.acks_late is True


def test_class_based_task_and_register_task(app: Celery) -> None:
    class Multiply(Task):
        name = "class.multiply"

        def run(self, x: int, y: int) -> int:
            return x * y

    task = app.register_task(Multiply())
    assert app.tasks["class.multiply"] is task
    assert task(3, 4) == 12
    assert task.delay(3, 4).id
    outcomes = work(app)
    assert outcomes[0].retval == 12


def test_custom_task_class_via_app_task_cls() -> None:
    class Tracking(Task):
        seen: list[str] = []

        def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
            self.seen.append(task_id)

    app = Celery("tc", broker="memory://", backend="memory://", task_cls=Tracking,
                 set_as_current=False)

    @app.task
    def t() -> int:
        return 1

    assert isinstance(t, Tracking)
    result = t.apply()
    assert Tracking.seen == [result.id]


# -- hooks ---------------------------------------------------------------------------------
class Recorder(Task):
    calls: list[tuple[Any, ...]] = []

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        self.calls.append(("before_start", task_id, tuple(args), kwargs))

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        self.calls.append(("on_success", retval, task_id, tuple(args), kwargs))

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        self.calls.append(("on_failure", repr(exc), task_id, tuple(args), kwargs,
                           "ValueError: bad" in str(einfo)))

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                 einfo: Any) -> None:
        self.calls.append(("on_retry", repr(exc), task_id, tuple(args), kwargs,
                           einfo is not None))

    def after_return(self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any,
                     einfo: Any) -> None:
        self.calls.append(("after_return", status, repr(retval), task_id, tuple(args), kwargs,
                           einfo is not None))


@pytest.fixture
def recorder() -> Iterator[list[tuple[Any, ...]]]:
    Recorder.calls = []
    yield Recorder.calls


def test_hooks_on_success(app: Celery, recorder: list[tuple[Any, ...]]) -> None:
    @app.task(base=Recorder)
    def ok(x: int, y: int = 0) -> int:
        return x + y

    tid = ok.apply_async((1,), {"y": 2}).id
    work(app)
    assert recorder == [
        ("before_start", tid, (1,), {"y": 2}),
        ("on_success", 3, tid, (1,), {"y": 2}),
        ("after_return", states.SUCCESS, "3", tid, (1,), {"y": 2}, False),
    ]


def test_hooks_on_failure(app: Celery, recorder: list[tuple[Any, ...]]) -> None:
    @app.task(base=Recorder)
    def bad(x: int) -> None:
        raise ValueError("bad")

    tid = bad.delay(5).id
    work(app)
    assert recorder == [
        ("before_start", tid, (5,), {}),
        ("on_failure", "ValueError('bad')", tid, (5,), {}, True),
        ("after_return", states.FAILURE, "ValueError('bad')", tid, (5,), {}, True),
    ]
    assert app.AsyncResult(tid).state == states.FAILURE


def test_hooks_on_retry(app: Celery, recorder: list[tuple[Any, ...]]) -> None:
    @app.task(base=Recorder, bind=True)
    def flaky(self: Task) -> None:
        raise self.retry(exc=KeyError("k"), countdown=1)

    tid = flaky.delay().id
    work(app)
    # as in Celery, after_return is not called for RETRY (nor IGNORED/REJECTED)
    assert recorder == [("before_start", tid, (), {}),
                        ("on_retry", "KeyError('k')", tid, (), {}, True)]


def test_on_failure_option_receives_self_first(app: Celery) -> None:
    seen: list[tuple[Any, ...]] = []

    def handler(self: Task, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                einfo: Any) -> None:
        seen.append((self.name, repr(exc), task_id, tuple(args), kwargs))

    @app.task(name="hooked", on_failure=handler)
    def hooked(a: int) -> None:
        raise RuntimeError("x")

    tid = hooked.delay(1).id
    work(app)
    assert seen == [("hooked", "RuntimeError('x')", tid, (1,), {})]


# -- self.request ---------------------------------------------------------------------------
def test_request_fields_in_the_worker(app: Celery) -> None:
    seen: dict[str, Any] = {}

    @app.task(bind=True, name="req.fields")
    def inspect_request(self: Task, a: int, b: int = 0) -> None:
        r = self.request
        seen.update(id=r.id, args=r.args, kwargs=r.kwargs, retries=r.retries, eta=r.eta,
                    expires=r.expires, delivery_info=r.delivery_info, hostname=r.hostname,
                    is_eager=r.is_eager, called_directly=r.called_directly,
                    root_id=r.root_id, parent_id=r.parent_id,
                    correlation_id=r.correlation_id, headers=r.headers, task=r.task,
                    origin=r.origin, reply_to=r.reply_to, timelimit=r.timelimit,
                    tenant=r.tenant)

    result = inspect_request.apply_async((1,), {"b": 2}, queue="work", expires=600,
                                         headers={"tenant": "acme"}, priority=4,
                                         time_limit=10, soft_time_limit=5)
    work(app, ("work",))
    assert seen["id"] == result.id == seen["correlation_id"] == seen["root_id"]
    assert list(seen["args"]) == [1] and seen["kwargs"] == {"b": 2}
    assert seen["retries"] == 0 and seen["eta"] is None
    assert datetime.fromisoformat(seen["expires"]) > datetime.now(timezone.utc)
    info = seen["delivery_info"]
    assert info["routing_key"] == "work" and info["exchange"] == ""
    assert info["redelivered"] is False and info["priority"] == 4
    assert seen["hostname"] == "w1@example"
    assert seen["is_eager"] is False and seen["called_directly"] is False
    assert seen["parent_id"] is None
    assert seen["headers"]["tenant"] == "acme" and seen["headers"]["id"] == result.id
    assert seen["tenant"] == "acme"  # custom headers read as request fields, as in Celery
    assert seen["task"] == "req.fields"
    assert seen["origin"].startswith("gen") and seen["reply_to"]
    assert tuple(seen["timelimit"]) == (10, 5)


def test_request_redelivered_flag(app: Celery) -> None:
    seen: list[bool] = []

    @app.task(bind=True)
    def once(self: Task) -> None:
        seen.append(self.request.delivery_info["redelivered"])

    once.delay()
    [delivery] = receive(app)
    app.broker.release(delivery)
    work(app)
    assert seen == [True]


def test_request_of_a_subtask_has_parent_and_root(app: Celery) -> None:
    @app.task(bind=True)
    def parent(self: Task) -> str:
        return child.delay().id

    @app.task(bind=True)
    def child(self: Task) -> tuple[str, str]:
        return self.request.parent_id, self.request.root_id

    root = parent.delay()
    [outcome] = work(app)
    [child_message] = messages(app)
    assert child_message.headers["parent_id"] == root.id
    assert child_message.headers["root_id"] == root.id
    assert outcome.retval == child_message.task_id


def test_request_when_called_directly(app: Celery) -> None:
    @app.task(bind=True)
    def direct(self: Task) -> tuple[Any, ...]:
        return self.request.called_directly, self.request.is_eager, self.request.id

    assert direct() == (True, False, None)
    assert direct.request.id is None  # the stack is popped after the call


# -- retry -----------------------------------------------------------------------------------
def test_retry_republishes_same_id_with_retries_plus_one(app: Celery) -> None:
    @app.task(bind=True, max_retries=3)
    def flaky(self: Task, x: int) -> None:
        raise self.retry(exc=OSError("down"), countdown=30)

    result = flaky.apply_async((1,), queue="slow", headers={"tenant": "t1"}, priority=2)
    [outcome] = work(app, ("slow",))
    assert outcome.state == states.RETRY
    assert app.AsyncResult(result.id).state == states.RETRY
    assert messages(app, ("slow",)) == []  # waits in the broker, not visible yet
    [msg] = messages(app, ("slow",), shift=31)
    assert msg.task_id == result.id
    assert msg.headers["retries"] == 1
    assert msg.headers["tenant"] == "t1"
    assert msg.headers["root_id"] == result.id
    eta = datetime.fromisoformat(msg.headers["eta"])
    assert timedelta(seconds=25) < eta - datetime.now(timezone.utc) <= timedelta(seconds=30)
    assert msg.properties["delivery_info"]["routing_key"] == "slow"
    assert msg.priority == 2
    args, kwargs, _ = json.loads(msg.body)
    assert args == [1] and kwargs == {}


def test_retry_with_eta_and_new_arguments(app: Celery) -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=90)

    @app.task(bind=True)
    def moving(self: Task, x: int) -> None:
        raise self.retry(args=(x + 1,), eta=when)

    moving.delay(1)
    work(app)
    [msg] = messages(app, shift=91)
    assert datetime.fromisoformat(msg.headers["eta"]) == when
    assert json.loads(msg.body)[0] == [2]


def test_retry_default_delay_is_default_retry_delay(app: Celery) -> None:
    @app.task(bind=True, default_retry_delay=45)
    def slow(self: Task) -> None:
        raise self.retry()

    slow.delay()
    work(app)
    assert messages(app, shift=40) == []
    assert len(messages(app, shift=46)) == 1


def test_retry_past_the_limit_raises_max_retries_exceeded(app: Celery) -> None:
    @app.task(bind=True, max_retries=2)
    def limited(self: Task) -> None:
        raise self.retry(countdown=1)

    result = limited.delay()
    for _ in range(2):
        work(app, shift=5)
    [outcome] = work(app, shift=10)
    assert outcome.state == states.FAILURE
    assert isinstance(outcome.exc, MaxRetriesExceededError)
    stored = app.AsyncResult(result.id)
    assert stored.state == states.FAILURE
    assert isinstance(stored.result, MaxRetriesExceededError)
    assert messages(app, shift=100) == []


def test_retry_past_the_limit_raises_the_original_exception(app: Celery) -> None:
    @app.task(bind=True)
    def limited(self: Task) -> None:
        raise self.retry(exc=ConnectionError("gone"), countdown=1, max_retries=0)

    result = limited.delay()
    [outcome] = work(app)
    assert outcome.state == states.FAILURE and isinstance(outcome.exc, ConnectionError)
    with pytest.raises(ConnectionError, match="gone"):
        app.AsyncResult(result.id).get(timeout=1)


def test_retry_max_retries_none_retries_forever(app: Celery) -> None:
    @app.task(bind=True, max_retries=None)
    def forever(self: Task) -> None:
        raise self.retry(countdown=1)

    forever.delay()
    for i in range(5):
        work(app, shift=2 * i)
    [msg] = messages(app, shift=20)
    assert msg.headers["retries"] == 5


def test_retry_throw_false_returns_the_retry(app: Celery) -> None:
    @app.task(bind=True)
    def quiet(self: Task) -> str:
        ret = self.retry(countdown=1, throw=False)
        assert isinstance(ret, Retry)
        return "went on"

    quiet.delay()
    [outcome] = work(app)
    assert outcome.retval == "went on"
    [msg] = messages(app, shift=2)
    assert msg.headers["retries"] == 1


def test_retry_called_directly_raises(app: Celery) -> None:
    @app.task(bind=True)
    def direct(self: Task) -> None:
        raise self.retry(exc=ValueError("direct"))

    with pytest.raises(ValueError, match="direct"):
        direct()


def test_autoretry_for_with_retry_kwargs_and_backoff(app: Celery) -> None:
    calls: list[int] = []

    @app.task(bind=True, autoretry_for=(ConnectionError,), dont_autoretry_for=(
        ConnectionRefusedError,), retry_kwargs={"max_retries": 1}, retry_backoff=10,
              retry_jitter=False)
    def refresh(self: Task, kind: str) -> None:
        calls.append(self.request.retries)
        if kind == "refused":
            raise ConnectionRefusedError("no")
        raise ConnectionError("timeline")

    failing = refresh.delay("down")
    work(app)
    assert messages(app, shift=9) == []
    [msg] = messages(app, shift=11)  # backoff: 10 * 2**0
    assert msg.task_id == failing.id and msg.headers["retries"] == 1
    refused = refresh.delay("refused")
    [outcome] = work(app)
    assert outcome.state == states.FAILURE
    assert app.AsyncResult(refused.id).state == states.FAILURE


def test_autoretry_gives_up_after_max_retries(app: Celery) -> None:
    @app.task(autoretry_for=(KeyError,), max_retries=1, default_retry_delay=1)
    def lookup() -> None:
        raise KeyError("missing")

    result = lookup.delay()
    work(app)
    [outcome] = work(app, shift=2)
    assert outcome.state == states.FAILURE and isinstance(outcome.exc, KeyError)
    assert app.AsyncResult(result.id).state == states.FAILURE


def test_hacksoft_retry_then_on_failure_eager(app: Celery) -> None:
    """HackSoft: shared_task(bind=True, on_failure=...) + self.retry(exc=exc, countdown=5)."""
    app.conf.task_always_eager = True
    failures: list[tuple[Any, ...]] = []
    attempts: list[int] = []

    def _email_send_failure(self: Task, exc: BaseException, task_id: str, args: Any,
                            kwargs: Any, einfo: Any) -> None:
        failures.append((args[0], repr(exc), task_id))

    @shared_task(bind=True, on_failure=_email_send_failure)
    def email_send(self: Task, email_id: int) -> None:
        attempts.append(self.request.retries)
        try:
            raise ConnectionError("smtp down")
        except Exception as exc:
            self.retry(exc=exc, countdown=5)

    result = email_send.delay(42)
    assert attempts == [0, 1, 2, 3]
    assert failures == [(42, "ConnectionError('smtp down')", result.id)]
    assert result.state == states.FAILURE
    assert isinstance(result.result, ConnectionError)


def test_hacksoft_retry_worker_path(app: Celery) -> None:
    failures: list[int] = []

    def _failure(self: Task, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                 einfo: Any) -> None:
        failures.append(args[0])

    @shared_task(bind=True, on_failure=_failure, max_retries=1)
    def send(self: Task, email_id: int) -> None:
        try:
            raise ConnectionError("smtp down")
        except Exception as exc:
            self.retry(exc=exc, countdown=5)

    result = send.delay(7)
    work(app)
    assert failures == []
    work(app, shift=6)
    assert failures == [7]
    assert app.AsyncResult(result.id).state == states.FAILURE


# -- update_state ------------------------------------------------------------------------------
def test_update_state_progress_and_custom_state(app: Celery) -> None:
    snapshots: list[tuple[str, Any]] = []

    @app.task(bind=True)
    def progress(self: Task) -> str:
        self.update_state(state="PROGRESS", meta={"done": 1, "total": 2})
        r = app.AsyncResult(self.request.id)
        snapshots.append((r.state, r.info))
        self.update_state(task_id="other-id", state="CUSTOM", meta=["x"])
        return "finished"

    result = progress.delay()
    work(app)
    assert snapshots == [("PROGRESS", {"done": 1, "total": 2})]
    assert app.AsyncResult("other-id").state == "CUSTOM"
    assert app.AsyncResult("other-id").result == ["x"]
    assert result.get(timeout=1) == "finished"


def test_update_state_outside_a_task_needs_an_id(app: Celery) -> None:
    @app.task
    def t() -> None:
        return None

    with pytest.raises(ValueError):
        t.update_state(state="PROGRESS")
    t.update_state("explicit", state="PROGRESS", meta={"a": 1})
    assert app.AsyncResult("explicit").info == {"a": 1}


def test_track_started_stores_started(app: Celery) -> None:
    states_seen: list[str] = []

    @app.task(bind=True, track_started=True)
    def tracked(self: Task) -> None:
        states_seen.append(app.AsyncResult(self.request.id).state)
        states_seen.append(app.AsyncResult(self.request.id).info["hostname"])

    tracked.delay()
    work(app)
    assert states_seen == [states.STARTED, "w1@example"]


def test_track_started_with_ignore_result_stores_nothing(app: Celery) -> None:
    """Celery's Django tutorial's ``debug_task`` (``ignore_result=True``) with
    ``CELERY_TASK_TRACK_STARTED = True``: Celery stores no STARTED for it, which would
    otherwise stay for ever (no final state replaces it)."""
    seen: list[str] = []

    @app.task(bind=True, track_started=True, ignore_result=True)
    def debug_task(self: Task) -> None:
        seen.append(app.AsyncResult(self.request.id).state)

    result = debug_task.delay()
    [outcome] = work(app)
    assert outcome.state == states.SUCCESS
    assert seen == [states.PENDING]
    assert app.AsyncResult(result.id).state == states.PENDING


def test_ignore_result_stores_nothing(app: Celery) -> None:
    @app.task(ignore_result=True)
    def quiet() -> int:
        return 1

    result = quiet.delay()
    [outcome] = work(app)
    assert outcome.state == states.SUCCESS
    assert app.AsyncResult(result.id).state == states.PENDING


def test_update_state_failure_then_ignore_like_commcare(app: Celery) -> None:
    """CommCare's pattern: ``update_state(state=FAILURE, meta={...})`` then ``Ignore``: the
    stored FAILURE (with its plain meta) is what every reader sees; the worker stores
    nothing over it."""
    @app.task(bind=True)
    def reported(self: Task) -> None:
        self.update_state(state=states.FAILURE, meta={"errors": ["e"]})
        raise Ignore()

    result = reported.delay()
    [outcome] = work(app)
    assert outcome.state == states.IGNORED
    stored = app.backend.get(result.id)
    assert stored is not None and stored["status"] == states.FAILURE
    assert stored["result"] == {"errors": ["e"]}
    fresh = app.AsyncResult(result.id)
    assert fresh.state == states.FAILURE and fresh.info == {"errors": ["e"]}


def test_shared_task_proxy_is_a_task(app: Celery) -> None:
    @shared_task
    def proxied() -> int:
        return 1

    assert isinstance(proxied, Task)
    assert proxied.app is app and proxied.delay().id


def test_retry_without_exc_called_directly_raises_retry(app: Celery) -> None:
    @app.task(bind=True)
    def direct(self: Task) -> None:
        raise self.retry()

    with pytest.raises(Retry):
        direct()


def test_retry_with_only_args_drops_kwargs_they_fill(app: Celery) -> None:
    @app.task(bind=True)
    def move(self: Task, x: int, y: int = 0, z: int = 0) -> None:
        raise self.retry(args=(10,), countdown=1)

    move.apply_async(kwargs={"x": 1, "z": 3})
    work(app)
    [msg] = messages(app, shift=2)
    args, kwargs, _ = json.loads(msg.body)
    assert args == [10] and kwargs == {"z": 3}


def test_retry_with_only_kwargs_rebinds_positional(app: Celery) -> None:
    @app.task(bind=True)
    def move(self: Task, x: int, y: int = 0) -> None:
        raise self.retry(kwargs={"y": 5}, countdown=1)

    move.delay(1, 2)
    work(app)
    [msg] = messages(app, shift=2)
    args, kwargs, _ = json.loads(msg.body)
    assert args == [1, 5] and kwargs == {}


def test_retry_keeps_ignore_result_and_time_limits(app: Celery) -> None:
    @app.task(bind=True)
    def quiet(self: Task) -> None:
        raise self.retry(countdown=1)

    quiet.apply_async(ignore_result=True, time_limit=9, soft_time_limit=4)
    work(app)
    [msg] = messages(app, shift=2)
    assert msg.headers["ignore_result"] is True
    assert msg.headers["timelimit"] == [9, 4]


def test_retry_publish_failure_rejects_the_message(app: Celery) -> None:
    from celeriac.exceptions import OperationalError, Reject

    @app.task(bind=True)
    def flaky(self: Task) -> None:
        raise self.retry(countdown=1)

    flaky.delay()
    broker = app.broker
    with mock.patch.object(broker, "publish", side_effect=OperationalError("down")), \
            mock.patch.object(app.conf, "task_publish_retry", False):
        [outcome] = work(app)
    assert outcome.state == states.REJECTED
    assert isinstance(outcome.exc, Reject) and outcome.exc.requeue is False
    [dead] = broker.dead_letters()
    assert dead.reason.startswith("rejected")


def test_retry_backoff_factor_like_celery(app: Celery) -> None:
    @app.task(bind=True, retry_backoff=True, retry_jitter=False, retry_backoff_max=5)
    def t(self: Task) -> None:
        return None

    t.push_request(retries=0)
    try:
        assert t.autoretry_countdown() == 1
        t.request.retries = 4
        assert t.autoretry_countdown() == 5  # capped by retry_backoff_max
    finally:
        t.pop_request()


def test_app_task_called_with_function_and_options(app: Celery) -> None:
    def plain(x: int) -> int:
        return x

    task = app.task(plain, name="direct.plain", max_retries=1)
    assert task.name == "direct.plain" and task.max_retries == 1
    shared = shared_task(plain, name="direct.shared")
    assert shared.name == "direct.shared" and shared(3) == 3


def test_unserializable_return_value_fails_the_task(app: Celery) -> None:
    @app.task
    def returns_a_set() -> set[int]:
        return {1, 2}

    result = returns_a_set.delay()
    [outcome] = work(app)
    assert outcome.state == states.FAILURE
    with pytest.raises(TypeError, match="cannot serialize the result"):
        result.get(timeout=1)


def test_unserializable_argument_fails_at_publish(app: Celery) -> None:
    @app.task
    def takes(x: Any) -> None:
        return None

    with pytest.raises(TypeError):
        takes.delay({1, 2})
    assert messages(app) == []


def test_hook_errors_are_logged_not_fatal(app: Celery, caplog: pytest.LogCaptureFixture) -> None:
    class Loud(Task):
        def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
            raise RuntimeError("hook broke")

    @app.task(base=Loud)
    def fine() -> int:
        return 1

    result = fine.delay()
    [outcome] = work(app)
    assert outcome.state == states.SUCCESS and result.get(timeout=1) == 1
    assert "on_success raised" in caplog.text
    assert fine.request_stack_empty()


def test_retry_keeps_shadow_and_masked_reprs(app: Celery) -> None:
    @app.task(bind=True)
    def charge(self: Task, card: str) -> None:
        raise self.retry(countdown=1)

    charge.apply_async(("4111 1111",), shadow="charge-42", argsrepr="('****',)")
    work(app)
    [msg] = messages(app, shift=2)
    assert msg.headers["shadow"] == "charge-42"
    assert msg.headers["argsrepr"] == "('****',)"
    assert "4111" not in msg.headers["argsrepr"]


@pytest.mark.parametrize(("message", "reason"), [
    (Message({"task": "tasks.nope", "id": "u1"}, {}, b"[[], {}, {}]"), "unregistered"),
    (Message({"task": "t", "id": "d1"}, {}, b"[[5, 5], {}]"), "decode_error"),
    (Message({"task": "t", "id": "d2"}, {}, b"not json"), "decode_error"),
    (Message({"task": "t", "id": "c1"}, {}, b"\x80\x04K\x01.", "application/x-python-serialize",
             "binary"), "content_disallowed"),
])
def test_bad_messages_are_dead_lettered_and_the_worker_carries_on(
        app: Celery, message: Message, reason: str) -> None:
    @app.task(name="t")
    def t() -> str:
        return "ran"

    app.broker.publish(message, "celery")
    good = t.delay()
    deliveries = receive(app)
    keeper = LeaseKeeper(app.broker, interval=60)
    keeper.hold(deliveries)
    runner = JobRunner(app, keeper, "w")
    jobs = [runner.prepare(d, set()) for d in deliveries]
    assert jobs[0] is None
    [outcome] = [runner.execute(job) for job in jobs if job is not None]
    assert outcome.retval == "ran" and good.get(timeout=1) == "ran"
    [dead] = app.broker.dead_letters("celery")
    assert dead.reason.startswith(reason) and dead.message.task_id == message.task_id


def test_allow_join_result_lets_a_task_wait(app: Celery) -> None:
    """Celery's ``allow_join_result()``: ``get()`` inside a task raises RuntimeError, except
    inside the block; ``denied_join_result()`` refuses it outside tasks too."""
    from celeriac.result import allow_join_result, denied_join_result

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    done = add.delay(2, 2)
    work(app)
    seen: list[object] = []

    @app.task
    def waits(task_id: str) -> None:
        try:
            app.AsyncResult(task_id).get(timeout=1)
        except RuntimeError as exc:
            seen.append(type(exc))
        with allow_join_result():
            seen.append(app.AsyncResult(task_id).get(timeout=1))

    waits.delay(done.id)
    [outcome] = work(app)
    assert outcome.state == states.SUCCESS
    assert seen == [RuntimeError, 4]
    with denied_join_result(), pytest.raises(RuntimeError):
        done.get(timeout=1)
    assert done.get(timeout=1) == 4
