"""Fixtures of the Django integration tests: sites (the project as processes) and Django here.

``site`` runs each test on SQLite and, when PostgreSQL is up, again on
PostgreSQL (a database made from a migrated template, dropped afterwards).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from djangosite import Site, Templates, require_django, require_postgres  # noqa: E402


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    made = Templates(tmp_path_factory.mktemp("django-templates"))
    yield made
    made.close()


def _site(backend: str, tmp_path: Path, templates: Templates) -> Iterator[Site]:
    require_django()
    if backend == "postgresql":
        require_postgres()
    site = Site(tmp_path, backend, templates)
    try:
        yield site
    finally:
        site.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def site(request: pytest.FixtureRequest, tmp_path: Path, templates: Templates) -> Iterator[Site]:
    yield from _site(request.param, tmp_path, templates)


@pytest.fixture
def sqlite_site(tmp_path: Path, templates: Templates) -> Iterator[Site]:
    yield from _site("sqlite", tmp_path, templates)


@pytest.fixture
def dj(django_inprocess: Any) -> Iterator[Any]:
    """Django in this process, with the project's app as the current app."""
    from celeriac.app import state as _state

    previous = _state.get_current_app()
    django_inprocess.app.set_current()
    yield django_inprocess
    _state.set_current_app(previous)
