"""Fixtures of the Pyramid integration tests: the test site and its celery_app reset."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from pyramidsite import Site, require_pyramid  # noqa: E402


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    require_pyramid()
    made = Site(tmp_path)
    yield made
    from celeriac.contrib.pyramid import celery_app

    celery_app.close()  # the next test's ini names another broker file


@pytest.fixture
def webapp(site: Site) -> Iterator[object]:
    import webtest

    from celeriac.contrib.pyramid import celery_app

    celery_app.close()
    yield webtest.TestApp(site.wsgi())
