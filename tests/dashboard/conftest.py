"""Fixtures of the dashboard tests: an app on the memory broker, a dashboard over it, clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the dashboard extra is not installed")

from starlette.testclient import TestClient

from celeriac import Celery
from celeriac.dashboard.auth import hash_password
from celeriac.dashboard.config import DashboardConfig
from celeriac.dashboard.server import Dashboard, create_app

PASSWORDS = {"admin": "s3cret-admin", "reader": "s3cret-reader"}
HASHES = {name: hash_password(pw) for name, pw in PASSWORDS.items()}


def make_app(tmp_path: Path, **conf: Any) -> Celery:
    app = Celery("dash", broker="memory://", backend="memory://", set_as_current=False)
    app.conf.update(beat_schedule_store=f"sqlite:///{tmp_path}/beat.sqlite3",
                    result_extended=True, **conf)

    @app.task(name="dash.add")
    def add(x: int, y: int) -> int:
        return x + y

    return app


@pytest.fixture
def celery_app(tmp_path: Path) -> Celery:
    return make_app(tmp_path)


def board_for(app: Celery, tmp_path: Path, **options: Any) -> Dashboard:
    config = DashboardConfig.from_app(app, history_url=f"sqlite:///{tmp_path}/history.sqlite3",
                                      **options)
    return Dashboard.open(app, config)


@pytest.fixture
def board(celery_app: Celery, tmp_path: Path) -> Iterator[Dashboard]:
    d = board_for(celery_app, tmp_path)
    yield d
    d.close()


@pytest.fixture
def client(board: Dashboard) -> Iterator[TestClient]:
    """A client of an auth-less (loopback) dashboard, with its CSRF token ready."""
    with TestClient(create_app(board, start_ingestor=False)) as c:
        yield c


def csrf_of(client: TestClient) -> str:
    """Open a page and read the session's CSRF token from it."""
    import re

    text = client.get("/login").text
    match = re.search(r'name="csrf_token" value="([^"]+)"', text) or re.search(
        r'"X-CSRF-Token": "([^"]+)"', text)
    assert match, "no CSRF token on the page"
    return match.group(1)


@pytest.fixture
def secured(celery_app: Celery, tmp_path: Path) -> Iterator[tuple[Dashboard, TestClient]]:
    """A password-protected dashboard: users admin (admin) and reader (read)."""
    celery_app.conf.dashboard_users = {
        "admin": {"password": HASHES["admin"], "role": "admin"},
        "reader": {"password": HASHES["reader"], "role": "read"}}
    d = board_for(celery_app, tmp_path)
    with TestClient(create_app(d, start_ingestor=False)) as c:
        yield d, c
    d.close()
