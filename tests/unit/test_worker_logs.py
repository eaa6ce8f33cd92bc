"""Log lines are bounded (issue 21, point 3): results, exceptions and arguments are cut to
the task's ``resultrepr_maxsize`` (Celery's option, default 1024) and argsrepr/kwargsrepr
mask arguments wherever a task is shown."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celery
from celeriac.exceptions import MaxRetriesExceededError
from celeriac.worker.job import JobRunner
from celeriac.worker.leases import LeaseKeeper

BIG = 5_000_000


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("logs", broker="memory://", backend="memory://", set_as_current=False)

    @app.task(name="t.big")
    def big() -> str:
        return "x" * BIG

    @app.task(name="t.small_repr", resultrepr_maxsize=100)
    def small_repr() -> str:
        return "y" * 10_000

    @app.task(name="t.fails")
    def fails() -> None:
        raise ValueError("z" * BIG)

    @app.task(name="t.retries", bind=True, max_retries=0)
    def retries(self: Any, password: str) -> None:
        self.retry(countdown=0)

    yield app


def run_all(app: Celery) -> None:
    keeper = LeaseKeeper(app.broker, interval=60)
    runner = JobRunner(app, keeper, "w@test")
    for delivery in app.broker.receive(["celery"], owner="w", limit=10, timeout=0):
        keeper.hold([delivery])
        job = runner.prepare(delivery, set())
        if job is not None:
            runner.run(job)


def longest(caplog: pytest.LogCaptureFixture) -> int:
    return max(len(record.getMessage()) for record in caplog.records)


def test_a_huge_result_is_cut_in_the_log(app: Celery, caplog: pytest.LogCaptureFixture) -> None:
    app.tasks["t.big"].delay()
    with caplog.at_level(logging.INFO):
        run_all(app)
    assert "succeeded" in caplog.text
    assert longest(caplog) < 1300
    assert "'xxx" in caplog.text and "..." in caplog.text


def test_resultrepr_maxsize_task_option(app: Celery, caplog: pytest.LogCaptureFixture) -> None:
    result = app.tasks["t.small_repr"].delay()
    with caplog.at_level(logging.INFO):
        run_all(app)
    [line] = [r.getMessage() for r in caplog.records if "succeeded" in r.getMessage()]
    shown = line.split(": ", 1)[1]
    assert len(shown) == 100 and shown.endswith("...")
    assert result.get(timeout=1) == "y" * 10_000  # the stored result is whole


def test_a_huge_exception_is_cut_in_the_log(app: Celery,
                                            caplog: pytest.LogCaptureFixture) -> None:
    app.tasks["t.fails"].delay()
    with caplog.at_level(logging.INFO):
        run_all(app)
    assert "raised unexpected" in caplog.text and "Traceback" in caplog.text
    assert longest(caplog) < 2 * 1024 + 2000  # the cut message, plus short frame lines
    assert all(len(line) <= 1200 for r in caplog.records for line in r.getMessage().splitlines())


def test_max_retries_shows_argsrepr_not_the_arguments(app: Celery) -> None:
    result = app.tasks["t.retries"].apply(("hunter2",), argsrepr="('***',)")
    with pytest.raises(MaxRetriesExceededError) as raised:
        result.get()
    assert "hunter2" not in str(raised.value) and "***" in str(raised.value)
