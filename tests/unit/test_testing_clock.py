"""The controllable clock (celery_clock / TestClock), enqueue assertions and drain."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from celeriac import Celery, clock, states
from celeriac.contrib.testing.clock import TestClock
from celeriac.contrib.testing.drain import drain
from celeriac.contrib.testing.enqueued import (
    Enqueued,
    all_enqueued,
    assert_enqueued,
    refute_enqueued,
)
from celeriac.exceptions import ImproperlyConfigured
from celeriac.schedules import crontab

UTC = timezone.utc
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday, 09:00 UTC


@pytest.fixture
def frozen(celery_app: Celery) -> Any:
    with TestClock(celery_app, START) as test_clock:
        yield test_clock


def test_clock_is_installed_and_removed(celery_app: Celery) -> None:
    assert not clock.is_controlled()
    with TestClock(celery_app, START) as test_clock:
        assert clock.is_controlled() and clock.now() == START == test_clock.now()
        assert celery_app.now() == START
        test_clock.advance(minutes=5, run=False)
        assert clock.now() == START + timedelta(minutes=5)
    assert not clock.is_controlled()


def test_clock_refuses_other_brokers(tmp_path: Any) -> None:
    app = Celery("sq", broker=f"sqlite:///{tmp_path}/db.sqlite3", set_as_current=False)
    with pytest.raises(ImproperlyConfigured, match="memory broker"), TestClock(app):
        pass
    app.close()


def test_countdown_runs_only_when_the_clock_reaches_it(celery_app: Celery, frozen: Any) -> None:
    ran: list[datetime] = []

    @celery_app.task
    def remind(who: str) -> str:
        ran.append(clock.now())
        return f"hi {who}"

    result = remind.apply_async(("ann",), countdown=3600)
    assert_enqueued(remind, args=("ann",), countdown=3600)
    summary = frozen.advance(minutes=59)
    assert summary.total == 0 and ran == []
    summary = frozen.advance(minutes=1)
    assert (summary.succeeded, ran) == (1, [START + timedelta(hours=1)])
    assert result.get(timeout=5) == "hi ann"
    refute_enqueued(remind)


def test_retry_with_exponential_backoff_runs_in_order_without_waiting(
        celery_app: Celery, frozen: Any) -> None:
    attempts: list[tuple[int, datetime]] = []

    @celery_app.task(bind=True, max_retries=4)
    def fetch(self: Any) -> str:
        attempts.append((self.request.retries, clock.now()))
        if self.request.retries < 4:
            raise self.retry(countdown=2 ** self.request.retries)
        return "fetched"

    result = fetch.delay()
    summary = frozen.advance(minutes=1)
    assert [n for n, _ in attempts] == [0, 1, 2, 3, 4]
    offsets = [(at - START).total_seconds() for _, at in attempts]
    assert offsets == [0, 1, 3, 7, 15]  # each retry at its own time: +1, +2, +4, +8
    assert (summary.retried, summary.succeeded) == (4, 1)
    assert result.get(timeout=5) == "fetched"


def test_autoretry_backoff_follows_the_clock(celery_app: Celery, frozen: Any) -> None:
    calls: list[datetime] = []

    @celery_app.task(autoretry_for=(ConnectionError,), retry_backoff=True,
                     retry_backoff_max=600, retry_jitter=False, max_retries=3)
    def call_api() -> None:
        calls.append(clock.now())
        raise ConnectionError("down")

    result = call_api.delay()
    summary = frozen.advance(hours=1)
    assert [(c - START).total_seconds() for c in calls] == [0, 1, 3, 7]
    assert (summary.retried, summary.failed) == (3, 1)
    assert result.state == states.FAILURE


def test_crontab_due_tomorrow_fires_after_one_day(celery_app: Celery, frozen: Any) -> None:
    fired: list[datetime] = []

    @celery_app.task(name="reports.daily")
    def daily() -> None:
        fired.append(clock.now())

    celery_app.conf.beat_schedule = {
        "daily": {"task": "reports.daily", "schedule": crontab(hour=7, minute=30)}}
    frozen.advance(hours=12)  # 21:00: not yet
    assert fired == []
    summary = frozen.advance(days=1)  # through tomorrow 07:30 (Tuesday)
    assert fired == [datetime(2026, 3, 3, 7, 30, tzinfo=UTC)]
    assert summary.succeeded == 1


def test_interval_schedule_fires_every_period(celery_app: Celery, frozen: Any) -> None:
    fired: list[datetime] = []

    @celery_app.task(name="tick")
    def tick() -> None:
        fired.append(clock.now())

    celery_app.conf.beat_schedule = {"every-10-min": {"task": "tick", "schedule": 600.0}}
    frozen.advance(minutes=35)
    assert [(f - START).total_seconds() / 60 for f in fired] == [10, 20, 30]


def test_expires_follows_the_clock(celery_app: Celery, frozen: Any) -> None:
    @celery_app.task
    def late() -> str:
        return "ran"

    result = late.apply_async(countdown=120, expires=60)
    frozen.advance(minutes=5)
    assert result.state == states.REVOKED


def test_soft_time_limit_follows_the_clock(celery_app: Celery, frozen: Any) -> None:
    import threading

    from celeriac.contrib.testing.worker import start_worker
    from celeriac.exceptions import SoftTimeLimitExceeded

    started, outcome = threading.Event(), []

    @celery_app.task(soft_time_limit=300)
    def slow() -> str:
        started.set()
        try:
            for _ in range(200):
                clock.sleep(0.05)  # waits on the test clock (or 10 s of real time)
        except SoftTimeLimitExceeded:
            outcome.append("soft limit")
            return "cleaned up"
        return "finished"

    with start_worker(celery_app, pool="threads", perform_ping_check=False):
        result = slow.delay()
        assert started.wait(5)
        frozen.advance(minutes=6, run=False)
        assert result.get(timeout=5) == "cleaned up"
    assert outcome == ["soft limit"]


def test_enqueued_assertions_and_messages(celery_app: Celery, frozen: Any) -> None:
    @celery_app.task
    def send_email(to: str, *, subject: str) -> None: ...

    send_email.apply_async(("a@x",), {"subject": "hi"}, queue="mail", priority=3)
    send_email.apply_async(("b@x",), {"subject": "later"}, countdown=90)
    found = assert_enqueued(send_email, args=["a@x"], kwargs={"subject": "hi"}, queue="mail")
    assert found[0].priority == 3 and found[0].countdown is None
    assert_enqueued(send_email, kwargs={"subject": "later"}, countdown=90)
    assert_enqueued(send_email, count=2)
    refute_enqueued(send_email, args=("c@x",))
    with pytest.raises(AssertionError, match=r"Enqueued:\n.*a@x"):
        assert_enqueued(send_email, args=("c@x",))
    with pytest.raises(AssertionError, match="b@x"):
        refute_enqueued(send_email, countdown=90)
    assert len(all_enqueued(app=celery_app)) == 2
    assert sorted(t.queue for t in Enqueued(celery_app).all(send_email)) == ["celery", "mail"]


def test_drain_runs_what_tasks_enqueue_and_scheduled_work(celery_app: Celery) -> None:
    seen: list[int] = []

    @celery_app.task
    def step(n: int) -> None:
        seen.append(n)
        if n < 3:
            step.apply_async((n + 1,), countdown=60 * n)

    @celery_app.task
    def boom() -> None:
        raise ValueError("boom")

    step.delay(0)
    boom.delay()
    before = clock.now()
    summary = drain(celery_app)
    assert seen == [0, 1, 2, 3]
    assert (summary.succeeded, summary.failed, summary.retried) == (4, 1, 0)
    assert not clock.is_controlled() and clock.now() >= before
    assert all_enqueued(app=celery_app) == []


def test_drain_without_scheduled_leaves_delayed_work(celery_app: Celery) -> None:
    @celery_app.task
    def later() -> None: ...

    later.apply_async(countdown=600)
    summary = drain(celery_app, with_scheduled=False)
    assert summary.total == 0
    assert_enqueued(later, countdown=600, delta=5)


def test_sqlite_broker_lists_waiting_and_drains(tmp_path: Any) -> None:
    from celeriac.contrib.testing.app import TestApp

    app = TestApp(broker=f"sqlite:///{tmp_path}/q.sqlite3")
    try:
        seen: list[str] = []

        @app.task
        def note(text: str) -> None:
            seen.append(text)

        note.apply_async(("later",), countdown=300)
        note.apply_async(("urgent",), priority=0)
        note.apply_async(("normal",), priority=5)
        waiting = Enqueued(app).all(note)
        assert [t.args for t in waiting] == [["urgent"], ["normal"], ["later"]]
        assert [t.countdown is None for t in waiting] == [True, True, False]
        assert_enqueued(note, app=app, args=("later",), countdown=300, delta=5)
        summary = drain(app)
        assert seen == ["urgent", "normal", "later"] and summary.succeeded == 3
        assert all_enqueued(app=app) == [] and not clock.is_controlled()
    finally:
        app.close()


def test_enqueue_assertions_refuse_brokers_that_cannot_list() -> None:
    from celeriac.brokers.base import Broker

    assert "waiting" not in Broker.__abstractmethods__
    broker = type("Remote", (Broker,), {name: lambda *a, **k: None
                                         for name in Broker.__abstractmethods__})("x://")
    with pytest.raises(NotImplementedError, match="memory or SQLite"):
        broker.waiting("celery")
