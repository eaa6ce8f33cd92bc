"""celeriac.contrib.soil: seed 000's examples (both error options, eager and on a worker),
progress, cached downloads and the framework-free and Pyramid view helpers."""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celery, states
from celeriac.contrib.soil import DownloadBase
from celeriac.contrib.soil.progress import update_task_state
from celeriac.contrib.soil.util import expose_cached_download, get_download_context
from celeriac.contrib.soil.views import fetch, poll
from celeriac.exceptions import Ignore
from celeriac.worker.consumer import Consumer
from celeriac.worker.pools import ThreadPool


def require(module: str) -> Any:
    """Import an optional test dependency: skip without it, fail under CI=true."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{module} is missing (CI=true: install the test extra)")
        pytest.skip(f"{module} is not installed")


class SomeError(Exception):
    pass


def make_app(eager: bool) -> Celery:
    app = Celery("soil", broker="memory://", backend="memory://")
    app.conf.task_always_eager = eager
    gate = threading.Event()
    app.gate = gate  # type: ignore[attr-defined]

    @app.task(name="soil.my_cool_task")
    def my_cool_task() -> None:
        try:
            raise SomeError("my uncool errors")
        except SomeError as err:
            errors = [err]
            update_task_state(my_cool_task, states.FAILURE, {"errors": errors})
            raise Ignore() from None

    @app.task(name="soil.my_uncool_task")
    def my_uncool_task() -> None:
        raise SomeError("my uncool error")

    @app.task(name="soil.export")
    def export(download_id: str) -> str:
        DownloadBase.set_progress(export, 0, 100)
        gate.wait(10)
        DownloadBase.set_progress(export, 50, 100)
        expose_cached_download("a,b\n1,2\n", 60, ".csv", download_id=download_id)
        return download_id

    return app


@pytest.fixture
def eager_app() -> Iterator[Celery]:
    app = make_app(eager=True)
    yield app
    app.close()


@pytest.fixture
def worker_app() -> Iterator[Celery]:
    app = make_app(eager=False)
    consumer = Consumer(app, ["celery"], ThreadPool(2), poll_timeout=0.05)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    yield app
    app.gate.set()  # type: ignore[attr-defined]
    consumer.stop()
    thread.join(10)
    consumer.pool.shutdown()
    app.close()


def test_option_1_in_eager_mode(eager_app: Celery) -> None:
    res = eager_app.tasks["soil.my_cool_task"].delay()
    assert isinstance(res.result, Ignore)
    assert res.successful() is False


def test_option_2_in_eager_mode_reaches_the_caller(eager_app: Celery) -> None:
    eager_app.conf.task_eager_propagates = True
    with pytest.raises(SomeError, match="my uncool error"):
        eager_app.tasks["soil.my_uncool_task"].delay()


def test_option_1_on_a_worker_keeps_the_errors(worker_app: Celery) -> None:
    res = worker_app.tasks["soil.my_cool_task"].delay()
    deadline = time.monotonic() + 10
    while res.state != states.FAILURE:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert res.successful() is False
    assert res.info == {"errors": ["my uncool errors"]}


def test_option_2_on_a_worker_is_a_failure(worker_app: Celery) -> None:
    res = worker_app.tasks["soil.my_uncool_task"].delay()
    with pytest.raises(Exception, match="my uncool error"):
        res.get(timeout=10)
    assert res.failed() is True


def test_set_progress_outside_a_task_does_nothing(eager_app: Celery) -> None:
    DownloadBase.set_progress(eager_app.tasks["soil.export"], 1, 2)  # no error, no state


def test_a_download_polled_by_its_id_then_served(worker_app: Celery) -> None:
    download = DownloadBase()
    download.set_task(worker_app.tasks["soil.export"].delay(download.download_id))
    status, body = poll(download.download_id, file_url="/f")
    deadline = time.monotonic() + 10
    while (body["progress"] or {}).get("percent") != 0.0:
        assert time.monotonic() < deadline, body
        time.sleep(0.02)
        status, body = poll(download.download_id, file_url="/f")
    assert status == 200 and body["state"] == "PROGRESS" and not body["is_ready"]
    assert body["download_url"] is None
    assert fetch(download.download_id)[0] == 409
    worker_app.gate.set()  # type: ignore[attr-defined]
    assert download.get_task().get(timeout=10) == download.download_id
    status, body = poll(download.download_id, file_url="/f")
    assert body["is_ready"] and body["download_url"] == "/f"
    assert body["progress"]["percent"] == 100.0
    status, found = fetch(download.download_id)
    assert status == 200 and not isinstance(found, dict)
    assert found.payload == b"a,b\n1,2\n"
    assert found.content_type == "text/csv" and found.filename == "download.csv"
    assert DownloadBase.get(download.download_id).get_content() == b"a,b\n1,2\n"


def test_owners_and_unknown_ids(worker_app: Celery) -> None:
    cached = expose_cached_download(b"secret", 60, "txt", owner_ids=[1])
    assert poll(cached.download_id, owner=2)[0] == 403
    assert fetch(cached.download_id, owner=2)[0] == 403
    assert fetch(cached.download_id, owner=1)[0] == 200
    assert poll("f" * 32)[0] == 404
    assert get_download_context("f" * 32)["is_alive"] is False


def test_failed_download_reports_its_errors(worker_app: Celery) -> None:
    download = DownloadBase()
    download.set_task(worker_app.tasks["soil.my_cool_task"].delay())
    deadline = time.monotonic() + 10
    while not poll(download.download_id)[1]["failed"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    body = poll(download.download_id)[1]
    assert body["errors"] == ["my uncool errors"] and not body["is_ready"]
    progress = download.get_progress()
    assert progress["error"] is True and progress["error_message"] == "my uncool errors"


def test_pyramid_views(worker_app: Celery) -> None:
    require("pyramid")
    webtest = require("webtest")
    from pyramid.config import Configurator

    with Configurator(settings={"celeriac_soil_prefix": "/dl"}) as config:
        config.include("celeriac.contrib.soil.pyramid_views")
        wsgi: Any = config.make_wsgi_app()
    client = webtest.TestApp(wsgi)
    cached = expose_cached_download("ok", 60, ".csv")
    body = client.get(f"/dl/{cached.download_id}/").json
    assert body["is_ready"] and body["download_url"] == f"/dl/{cached.download_id}/file"
    got = client.get(f"/dl/{cached.download_id}/file")
    assert got.body == b"ok" and got.content_type == "text/csv"
    assert got.headers["Content-Disposition"] == 'attachment; filename="download.csv"'
    assert got.headers["Cache-Control"] == "private, no-store"
    assert client.get(f"/dl/{'f' * 32}/", status=404).json["error"]
