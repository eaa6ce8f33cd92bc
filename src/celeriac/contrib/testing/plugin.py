"""The ``celeriac`` pytest entry point: off until the project opts in.

pytest loads this module whenever celeriac is installed (entry-point group
``pytest11``). Like Celery's plugin it adds no fixture by itself: with
``celeriac_fixtures = true`` in the pytest configuration (``pytest.ini``,
``[tool.pytest.ini_options]``...), ``--celeriac-fixtures`` on the command line or
``CELERIAC_PYTEST_FIXTURES=1`` in the environment it registers
:mod:`celeriac.contrib.pytest` (Celery's fixture names). Off by default so a
project that also has Celery's plugin enabled does not get two ``celery_app``
fixtures.
"""

from __future__ import annotations

import os

import pytest

PLUGIN = "celeriac.contrib.pytest"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("celeriac_fixtures", type="bool", default=False,
                  help="enable celeriac's pytest fixtures (celery_app, celery_worker, ...)")
    parser.getgroup("celeriac").addoption(
        "--celeriac-fixtures", action="store_true", default=False,
        help="enable celeriac's pytest fixtures (celery_app, celery_worker, ...)")


def enabled(config: pytest.Config) -> bool:
    env = os.environ.get("CELERIAC_PYTEST_FIXTURES", "").strip().lower()
    return bool(config.getoption("--celeriac-fixtures") or config.getini("celeriac_fixtures")
                or env in ("1", "true", "yes", "on"))


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if enabled(config) and not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.import_plugin(PLUGIN)
