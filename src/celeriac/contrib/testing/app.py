"""The app the pytest fixtures make (Celery's ``celery.contrib.testing.app``).

:func:`TestApp` is a :class:`~celeriac.Celery` on the in-memory broker and result
store (nothing on disk, nothing shared between tests) whose test settings
(:data:`DEFAULT_TEST_CONFIG`) are overridden by ``celery_config`` and the
``celery`` mark.
:func:`setup_default_app` makes an app current for the duration of a test and
restores the previous one; with ``use_trap`` the current app is a :class:`Trap`
that raises when code falls back to ``current_app`` instead of using the app
it was given.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from copy import deepcopy
from typing import Any

from ...app import state as _state
from ...app.base import Celery

#: Settings of the test app, applied as defaults (the caller's settings win).
DEFAULT_TEST_CONFIG: dict[str, Any] = {
    "worker_hijack_root_logger": False,
    "accept_content": ["json"],
    "enable_utc": True,
    "timezone": "UTC",
    "broker_url": "memory://",
    "result_backend": "memory://",
}


class Trap:
    """Stands in for the current app and raises when anything uses it."""

    def __getattr__(self, name: str) -> Any:
        # unittest.mock probes these on the objects it patches
        if name in ("_is_coroutine", "__func__"):
            return None
        raise RuntimeError(f"Test depends on current_app (it used current_app.{name}); pass "
                           "the app explicitly or use the depends_on_current_app fixture")


def TestApp(name: str | None = None, config: Mapping[str, Any] | None = None,
            enable_logging: bool = False, set_as_current: bool = False,
            backend: str | None = None, broker: str | None = None, **kwargs: Any) -> Celery:
    """A test app: memory broker and result store unless ``broker``/``backend``/``config``
    say otherwise. With ``enable_logging`` (the ``celery_enable_logging`` fixture) a
    worker started for it sets up logging at its ``loglevel``, as Celery's does; without,
    log records only reach the handlers already there (pytest's)."""
    from . import tasks  # noqa: F401 - registers celery.ping for start_worker's check

    settings = dict(deepcopy(DEFAULT_TEST_CONFIG), **(config or {}))
    if broker is not None:
        settings.pop("broker_url", None)
    if backend is not None:
        settings.pop("result_backend", None)
    app = Celery(name or "celery.tests", broker=broker, backend=backend,
                 set_as_current=set_as_current, **kwargs)
    app.conf.update(settings)
    app.test_enable_logging = enable_logging  # type: ignore[attr-defined]
    return app


@contextmanager
def set_trap(app: Celery) -> Iterator[Celery]:
    """Make :class:`Trap` the current app while the block runs."""
    previous = _state._current_app
    _state.set_current_app(Trap())  # type: ignore[arg-type]
    try:
        yield app
    finally:
        _state.set_current_app(previous)  # type: ignore[arg-type]


@contextmanager
def setup_default_app(app: Celery, use_trap: bool = False) -> Iterator[Celery]:
    """Run the block with ``app`` (or the trap) current; restore the previous app after."""
    previous = _state._current_app
    try:
        if use_trap:
            with set_trap(app):
                yield app
        else:
            yield app
    finally:
        _state.set_current_app(previous)  # type: ignore[arg-type]
        app.close()
