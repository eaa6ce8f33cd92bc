"""pytest fixtures with Celery's names and meaning (Celery's ``celery.contrib.pytest``).

Enable it as Celery's is enabled (it is off until asked for): ``pytest_plugins =
("celeriac.contrib.pytest",)`` in the root ``conftest.py``, ``-p
celeriac.contrib.pytest``, ``PYTEST_PLUGINS=celeriac.contrib.pytest``, or through
the ``celeriac`` entry point celeriac registers (:mod:`celeriac.contrib.testing.plugin`)
with ``celeriac_fixtures = true`` in the pytest configuration or ``--celeriac-fixtures``.

Celery's fixtures: ``celery_app`` / ``celery_session_app`` (a :func:`TestApp` on the
memory broker, configured by ``celery_config``, ``celery_parameters`` and the
``celery`` mark), ``celery_worker`` / ``celery_session_worker`` (a real worker in a
thread, :func:`~celeriac.contrib.testing.worker.start_worker`), ``celery_includes``,
``celery_class_tasks``, ``celery_worker_pool``, ``celery_worker_parameters``,
``celery_enable_logging``, ``use_celery_app_trap`` and ``depends_on_current_app``.
celeriac's own: ``celery_clock`` (:class:`~celeriac.contrib.testing.clock.TestClock`)
and ``celery_enqueued`` (:class:`~celeriac.contrib.testing.enqueued.Enqueued`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

from ..app.base import Celery
from .testing.app import TestApp, setup_default_app
from .testing.clock import TestClock
from .testing.enqueued import Enqueued
from .testing.worker import TestWorkController, start_worker

#: As Celery's ``NO_WORKER``: set it to run the suite without starting embedded workers.
NO_WORKER = os.environ.get("NO_WORKER")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "celery(**overrides): override celery configuration for a test case")


@contextmanager
def _create_app(enable_logging: bool = False, use_trap: bool = False,
                parameters: Mapping[str, Any] | None = None,
                **config: Any) -> Iterator[Celery]:
    app = TestApp(set_as_current=False, enable_logging=enable_logging, config=config,
                  **dict(parameters or {}))
    with setup_default_app(app, use_trap=use_trap):
        yield app


def _config(request: pytest.FixtureRequest, celery_config: Mapping[str, Any]) -> dict[str, Any]:
    mark = request.node.get_closest_marker("celery")
    return dict(celery_config, **(mark.kwargs if mark else {}))


@pytest.fixture(scope="session")
def use_celery_app_trap() -> bool:
    """Override to return True: code that falls back to ``current_app`` then raises."""
    return False


@pytest.fixture(scope="session")
def celery_session_app(request: pytest.FixtureRequest, celery_config: Mapping[str, Any],
                       celery_parameters: Mapping[str, Any], celery_enable_logging: bool,
                       use_celery_app_trap: bool) -> Iterator[Celery]:
    """The app for session-scoped fixtures (and ``celery_session_worker``)."""
    with _create_app(enable_logging=celery_enable_logging, use_trap=use_celery_app_trap,
                     parameters=celery_parameters, **_config(request, celery_config)) as app:
        if not use_celery_app_trap:
            app.set_default()
            app.set_current()
        yield app


@pytest.fixture(scope="session")
def celery_session_worker(celery_session_app: Celery, celery_includes: Sequence[str],
                          celery_class_tasks: Sequence[Any], celery_worker_pool: str,
                          celery_worker_parameters: Mapping[str, Any]
                          ) -> Iterator[TestWorkController | None]:
    """A worker that lives for the whole test session."""
    if NO_WORKER:
        yield None
        return
    _load(celery_session_app, celery_includes, celery_class_tasks)
    with start_worker(celery_session_app, pool=celery_worker_pool,
                      **celery_worker_parameters) as worker:
        yield worker


def _load(app: Celery, includes: Sequence[str], class_tasks: Sequence[Any] = ()) -> None:
    import importlib

    for module in includes:
        importlib.import_module(module)
    for task in class_tasks:
        app.register_task(task)


@pytest.fixture(scope="session")
def celery_enable_logging() -> bool:
    """Override to return True to see the embedded worker's log records."""
    return False


@pytest.fixture(scope="session")
def celery_includes() -> Sequence[str]:
    """Override with modules to import before a worker starts (tasks, signal handlers)."""
    return ()


@pytest.fixture(scope="session")
def celery_worker_pool() -> str:
    """Override to choose the embedded worker's pool: ``solo`` (default), ``threads``,
    ``asyncio`` (``prefork`` runs as ``threads``, with a warning)."""
    return "solo"


@pytest.fixture(scope="session")
def celery_config() -> Mapping[str, Any]:
    """Override with the settings of the test app (``celery_app``, ``celery_session_app``)."""
    return {}


@pytest.fixture(scope="session")
def celery_parameters() -> Mapping[str, Any]:
    """Override with keyword arguments for the test app's ``Celery(...)``."""
    return {}


@pytest.fixture(scope="session")
def celery_worker_parameters() -> Mapping[str, Any]:
    """Override with keyword arguments for the embedded worker (``queues``, ``beat``,
    ``concurrency``, ``shutdown_timeout``, ``perform_ping_check``...)."""
    return {}


@pytest.fixture(scope="session")
def celery_class_tasks() -> Sequence[Any]:
    """Override with task classes to register on the session app."""
    return []


@pytest.fixture()
def celery_app(request: pytest.FixtureRequest, celery_config: Mapping[str, Any],
               celery_parameters: Mapping[str, Any], celery_enable_logging: bool,
               use_celery_app_trap: bool) -> Iterator[Celery]:
    """A fresh test app for one test (memory broker and results unless configured)."""
    with _create_app(enable_logging=celery_enable_logging, use_trap=use_celery_app_trap,
                     parameters=celery_parameters, **_config(request, celery_config)) as app:
        yield app


@pytest.fixture()
def celery_worker(celery_app: Celery, celery_includes: Sequence[str],
                  celery_worker_pool: str, celery_worker_parameters: Mapping[str, Any]
                  ) -> Iterator[TestWorkController | None]:
    """A worker for ``celery_app`` in a thread, stopped when the test returns."""
    if NO_WORKER:
        yield None
        return
    _load(celery_app, celery_includes)
    with start_worker(celery_app, pool=celery_worker_pool,
                      **celery_worker_parameters) as worker:
        yield worker


@pytest.fixture()
def depends_on_current_app(celery_app: Celery) -> None:
    """Make ``celery_app`` the current app (for code that uses ``current_app``)."""
    celery_app.set_current()


@pytest.fixture()
def celery_clock(celery_app: Celery) -> Iterator[TestClock]:
    """Freeze the process clock for this test; ``celery_clock.advance(hours=1)`` moves it
    and runs what became due (delays, retries, beat) on ``celery_app``."""
    with TestClock(celery_app) as clock:
        yield clock


@pytest.fixture()
def celery_enqueued(celery_app: Celery) -> Enqueued:
    """What waits in ``celery_app``'s broker: ``celery_enqueued.assert_enqueued(task, ...)``."""
    return Enqueued(celery_app)
