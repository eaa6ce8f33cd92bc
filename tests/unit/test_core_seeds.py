"""The seeds' code examples, unit tier: the memory broker and an in-process worker thread.

Each task body is the seed's code with only the import changed (``celery`` ->
``celeriac``). Dogfooding: the app is the ``celery_app`` fixture of celeriac's
pytest plugin, the worker thread ``start_worker``, and the waits the seeds ask
for in minutes (``countdown=5`` retries, ``autoretry_for`` with the 180 s default
delay) pass on the ``celery_clock`` fixture instead of sleeping. A few checks
drive the worker's job runner directly to see one run's outcome. The acceptance
tier runs the same code through a real worker process.
"""

from __future__ import annotations

import contextlib
import errno
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest

from celeriac import Celery, Task, shared_task, states
from celeriac.app.trace import Outcome
from celeriac.contrib.testing.clock import TestClock
from celeriac.contrib.testing.worker import start_worker
from celeriac.exceptions import Ignore, Reject, TaskRevokedError
from celeriac.worker.job import JobRunner
from celeriac.worker.leases import LeaseKeeper


@pytest.fixture
def app(celery_app: Celery, depends_on_current_app: None) -> Celery:
    """Current, as the seeds' shared tasks need (Celery's fixture app is not, either)."""
    assert celery_app.broker_url == celery_app.backend_url == "memory://"
    return celery_app


@contextlib.contextmanager
def running_worker(app: Celery, queues: tuple[str, ...] = ("celery",)) -> Iterator[Any]:
    """The worker on two threads, in this process, until the block ends."""
    with start_worker(app, pool="threads", concurrency=2, hostname="celery@unit",
                      queues=list(queues)) as worker:
        yield worker


def work_later(app: Celery, shift: float) -> list[Outcome]:
    """Run what is ready ``shift`` seconds from now through the worker's JobRunner."""
    real = time.time
    with mock.patch("time.time", lambda: real() + shift):
        deliveries = app.broker.receive(["celery"], owner="later", limit=100, timeout=0)
        keeper = LeaseKeeper(app.broker, interval=60)
        keeper.hold(deliveries)
        runner = JobRunner(app, keeper, "celery@later")
        jobs = [runner.prepare(d, set()) for d in deliveries]
        return [runner.execute(job) for job in jobs if job is not None]


# -- 002: the tutorial -----------------------------------------------------------------------
def test_tutorial_delay_get_state(app: Celery) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        z = x + y
        print(z)
        return z

    with running_worker(app):
        add.delay(0, 0).get(timeout=10)  # the worker thread is up
        res = add.delay(2, 2)
        assert res.get(timeout=1) == 4
        assert res.id
        assert res.state == "SUCCESS"
        assert res.failed() is False
        assert res.successful() is True
        assert add.apply_async((2, 2)).get(timeout=5) == 4
        assert add.apply_async((2,), {"y": 3}).get(timeout=5) == 5


def test_tutorial_countdown_and_expires(app: Celery) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with running_worker(app):
        started = time.monotonic()
        assert add.apply_async((2, 2), countdown=0.3).get(timeout=5) == 4
        assert time.monotonic() - started >= 0.29
        expired = add.apply_async((1, 1), countdown=0.3, expires=0.1)
        with pytest.raises(TaskRevokedError):
            expired.get(timeout=5)
        assert expired.state == states.REVOKED


def test_tutorial_autoretry_for_with_retry_kwargs(app: Celery, celery_clock: TestClock) -> None:
    attempts: list[int] = []

    class Twitter:
        def refresh_timeline(self, user: str) -> str:
            attempts.append(len(attempts))
            if len(attempts) < 3:
                raise ConnectionError("twitter is down")
            return f"timeline of {user}"

    twitter = Twitter()

    @app.task(
        autoretry_for=(ConnectionError,),
        retry_kwargs={'max_retries': 5})
    def refresh_timeline(user: str) -> str:
        return twitter.refresh_timeline(user)

    result = refresh_timeline.delay("ann")
    assert celery_clock.advance(0).retried == 1 and result.state == states.RETRY
    assert celery_clock.advance(170).total == 0  # the default retry delay is 180 s
    assert celery_clock.advance(11).retried == 1
    assert celery_clock.advance(181).succeeded == 1
    assert result.get(timeout=1) == "timeline of ann"


def test_tutorial_reject_requeue_and_redelivered(app: Celery,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    @app.task(bind=True, acks_late=True)
    def requeues(self: Task) -> None:
        if not self.request.delivery_info['redelivered']:
            raise Reject('no reason', requeue=True)
        print('received two times')

    with running_worker(app):
        result = requeues.delay()
        result.get(timeout=5)
    assert "received two times" in capsys.readouterr().out


def test_tutorial_reject_to_dead_letters(app: Celery) -> None:
    class Renderer:
        def render_scene(self, file: str) -> None:
            raise MemoryError("too big")

    renderer = Renderer()

    def get_file(path: str) -> str:
        return path

    @app.task(bind=True, acks_late=True)
    def render_scene(self: Task, path: str) -> None:
        file = get_file(path)
        try:
            renderer.render_scene(file)
        except MemoryError as exc:
            raise Reject(exc, requeue=False)
        except OSError as exc:
            if exc.errno == errno.ENOMEM:
                raise Reject(exc, requeue=False)
        except Exception as exc:
            raise self.retry(exc, countdown=10)

    result = render_scene.delay("/scenes/huge.blend")
    [outcome] = work_later(app, 0)
    assert outcome.state == states.REJECTED
    [dead] = app.broker.dead_letters("celery")
    assert dead.message.task_id == result.id and "too big" in dead.reason


def test_tutorial_argsrepr_hides_secrets(app: Celery) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    add.apply_async((2, 3), argsrepr='(<secret-x>, <secret-y>)')
    [delivery] = app.broker.receive(["celery"], owner="t", limit=1, timeout=0)
    assert delivery.message.headers["argsrepr"] == "(<secret-x>, <secret-y>)"


def test_tutorial_signature_reprs(app: Celery) -> None:
    @app.task(name="tasks.add")
    def add(x: int, y: int, debug: bool = False) -> int:
        return x + y

    assert repr(add.s(2, 2, debug=True)) == "tasks.add(2, 2, debug=True)"
    with running_worker(app):
        assert add.s(2, 2).delay().get(timeout=5) == 4


# -- 004: HackSoft styleguide ---------------------------------------------------------------------
class EmailService:
    sent_failed: list[int] = []

    @classmethod
    def email_send(cls, email_id: int) -> None:
        raise ConnectionError(f"smtp refused {email_id}")

    @classmethod
    def email_failed(cls, email_id: int) -> None:
        cls.sent_failed.append(email_id)


def _email_send_failure(self: Task, exc: BaseException, task_id: str, args: Any,
                        kwargs: Any, einfo: Any) -> None:
    email_id = args[0]
    EmailService.email_failed(email_id)


@shared_task(bind=True, on_failure=_email_send_failure)
def email_send(self: Task, email_id: int) -> None:
    try:
        EmailService.email_send(email_id)
    except Exception as exc:
        self.retry(exc=exc, countdown=5)


def test_hacksoft_retries_then_on_failure(app: Celery, celery_clock: TestClock) -> None:
    EmailService.sent_failed = []
    result = email_send.delay(17)
    for attempt in range(4):  # the first run and max_retries=3 retries, 5 s apart
        ran = celery_clock.advance(0 if attempt == 0 else 5)
        assert (ran.retried, ran.failed) == ((1, 0) if attempt < 3 else (0, 1))
        assert EmailService.sent_failed == ([] if attempt < 3 else [17])
    assert celery_clock.advance(60).total == 0
    with pytest.raises(ConnectionError, match="smtp refused 17"):
        result.get(timeout=1)


# -- 000: CommCare HQ ------------------------------------------------------------------------------
@shared_task
def my_cool_task() -> None:
    try:
        raise KeyError("my uncool errors")
    except KeyError as err:
        errors = [err.args[0]]
        my_cool_task.update_state(state=states.FAILURE, meta={"errors": errors})
        raise Ignore()


def test_commcare_ignore_through_the_worker(app: Celery) -> None:
    res = my_cool_task.delay()
    [outcome] = work_later(app, 0)
    assert outcome.state == states.IGNORED
    stored = app.AsyncResult(res.id)
    assert stored.state == states.FAILURE and not stored.successful()
    assert stored.info == {"errors": ["my uncool errors"]}
    assert app.broker.receive(["celery"], owner="t", limit=1, timeout=0) == []  # acked


def test_commcare_option_two_fails(app: Celery) -> None:
    @app.task
    def my_uncool_task() -> None:
        raise ValueError("my uncool error")

    with running_worker(app):
        res = my_uncool_task.delay()
        with pytest.raises(ValueError, match="my uncool error"):
            res.get(timeout=2)
        assert res.failed()
