"""PostgreSQL for the data and the broker: tasks sent from a view are inserted inside the
request's transaction (no after-commit hook, no window)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyramidsite import Site, stop
from test_pyramid_worker import WORKER

from celeryproc import wait_until

PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_site(tmp_path: Path, pg_schema: str) -> Iterator[Site]:
    import psycopg

    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {pg_schema}")
    site = Site(tmp_path,
                data_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/test"
                         f"?options=-csearch_path%3D{pg_schema}",
                broker_url=f"{PG}?schema={pg_schema}")
    yield site
    from celeriac.contrib.pyramid import celery_app

    celery_app.close()


@pytest.fixture
def pg_web(pg_site: Site) -> Any:
    import webtest

    from celeriac.contrib.pyramid import celery_app

    celery_app.close()
    return webtest.TestApp(pg_site.wsgi())


def test_view_publishes_inside_its_transaction(pg_site: Site, pg_web: Any) -> None:
    from celeriac.contrib.pyramid import celery_app

    response = pg_web.post("/order", {"phone": "+358400000010"})
    assert response.json["after_commit_hooks"] == 0  # inserted in the transaction instead
    assert celery_app.broker.stats("celery").ready == 2
    pg_web.post("/order-aborted", {"phone": "+358400000011"}, status=409)
    assert celery_app.broker.stats("celery").ready == 2  # rolled back with the delivery
    assert len(pg_site.rows("SELECT id FROM delivery")) == 1

    proc = pg_site.start(*WORKER)
    try:
        sent = wait_until(lambda: pg_site.rows('SELECT "to" FROM sent_sms'), timeout=90,
                          what="the SMS")
    finally:
        stop(proc)
    assert sent == [("+358400000010",)]
