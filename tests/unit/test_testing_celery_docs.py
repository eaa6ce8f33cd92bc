"""The examples of Celery's "Testing with Celery" page (celery.contrib.pytest), with only
the import changed (``celery`` -> ``celeriac``). Where an example names a server
(``amqp://``, ``redis://``) the test app keeps its memory broker; see docs/testing.md.
The fixtures come from the ``celeriac`` pytest entry point (``celeriac_fixtures = true``
in pyproject.toml): nothing is imported from celeriac.contrib.pytest here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from celeriac import shared_task


@shared_task
def mytask() -> str:
    return "done"


@shared_task
def add(x: int, y: int) -> int:
    return x + y


# -- celery_app: "This fixture returns a Celery app you can use for testing." --
def test_create_task(celery_app: Any, celery_worker: Any) -> None:
    @celery_app.task
    def mul(x: int, y: int) -> int:
        return x * y

    celery_worker.reload()
    assert mul.delay(4, 4).get(timeout=10) == 16


# -- celery_worker: "Embed live worker." --
def test_add(celery_worker: Any) -> None:
    result = mytask.delay()
    assert result.get(timeout=10) == "done"


# "If you wish to override some setting in one test cases only - you can use the celery mark"
@pytest.mark.celery(result_backend="memory://", result_expires=60)
def test_other(celery_app: Any, celery_worker: Any) -> None:
    assert celery_app.conf.result_expires == 60
    assert add.delay(1, 2).get(timeout=10) == 3


@pytest.mark.celery(task_default_priority=5)
class TestSomething:  # Celery writes "test_something" (its own python_classes setting)
    def test_one(self, celery_app: Any) -> None:
        assert celery_app.conf.task_default_priority == 5

    def test_two(self, celery_app: Any) -> None:
        assert celery_app.conf.task_default_priority == 5


# -- session scope: celery_config, celery_parameters, celery_worker_parameters,
# celery_enable_logging, celery_includes, celery_worker_pool, celery_session_worker --
# Session-scoped fixtures belong to one pytest session: the first module that asks for
# ``celery_session_app`` decides its settings for every later one (test_testing_fixtures.py
# asks too, and xdist may run both files in one process). So this part of the page runs as
# the page means it, in a session of its own.
SESSION_EXAMPLE = '''
from typing import Any

import pytest

from celeriac import shared_task


@shared_task
def add(x: int, y: int) -> int:
    return x + y


@pytest.fixture(scope="session")
def celery_config() -> dict[str, Any]:
    return {
        "broker_url": "memory://",
        "result_backend": "memory://",
    }


@pytest.fixture(scope="session")
def celery_worker_parameters() -> dict[str, Any]:
    return {
        "queues": ("high-prio", "low-prio", "celery"),
        "exclude_queues": ("low-prio"),
    }


@pytest.fixture(scope="session")
def celery_enable_logging() -> bool:
    return True


@pytest.fixture(scope="session")
def celery_includes() -> list[str]:
    return [
        "celeriac.contrib.testing.tasks",
    ]


@pytest.fixture(scope="session")
def celery_worker_pool() -> str:
    return "prefork"


def test_add_task(celery_session_worker: Any) -> None:
    # Celery's page writes ``assert add.delay(2, 2) == 4``, comparing the AsyncResult
    # itself; the result is what it means
    assert add.delay(2, 2).get(timeout=10) == 4
    assert celery_session_worker.pool_name == "threads"  # prefork runs as threads here
    assert set(celery_session_worker.queues) == {"high-prio", "celery"}


def test_high_prio_queue(celery_app: Any, celery_worker: Any) -> None:
    assert add.apply_async((3, 4), queue="high-prio").get(timeout=10) == 7
'''


def test_session_scoped_fixtures_in_a_session_of_their_own(tmp_path: Path) -> None:
    (tmp_path / "test_celery_docs_session.py").write_text(SESSION_EXAMPLE)
    (tmp_path / "pytest.ini").write_text("[pytest]\nceleriac_fixtures = true\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "no:xdist", str(tmp_path)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout, done.stdout
