"""Seed 000 (CommCare HQ's Celery notes): ``update_state(state=, meta=)`` progress seen
by a polling client, ``Ignore`` (option 1) and a plain failure (option 2), through a
real worker; plus the seed's eager test (``res.result`` is an ``Ignore`` instance).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from workerproc import Project, WorkerProcess, project, wait_until

PROJ = '''
    import time
    from pathlib import Path

    from celeriac import Celery, states
    from celeriac.exceptions import Ignore

    app = Celery("proj")
    HERE = Path(__file__).parent


    class SomeError(Exception):
        pass


    def set_progress(task, current, total):
        """What soil's DownloadBase.set_progress does: a PROGRESS state with meta."""
        task.update_state(state="PROGRESS", meta={"current": current, "total": total})


    def wait_for(name, timeout=60.0):
        deadline = time.monotonic() + timeout
        while not (HERE / name).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(name)
            time.sleep(0.02)


    @app.task(bind=True)
    def my_cool_download(self):
        set_progress(self, 0, 100)
        wait_for("go-50")
        set_progress(self, 50, 100)
        wait_for("go-100")
        set_progress(self, 100, 100)
        return "payload"


    def update_task_state(task, state, meta):
        task.update_state(state=state, meta=meta)


    @app.task(bind=True)
    def my_cool_task(self):
        try:
            raise SomeError("my uncool errors")
        except SomeError as err:
            errors = [str(err)]
            update_task_state(self, states.FAILURE, {"errors": errors})
            raise Ignore()


    @app.task
    def plain_ignore():
        raise Ignore()


    @app.task
    def my_uncool_task():
        raise SomeError("my uncool error")
'''


@pytest.fixture(scope="module", params=["sqlite", "amqp"])
def running(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Project, WorkerProcess]]:
    """The embedded SQLite default, then RabbitMQ (CommCare's broker) with the results
    in PostgreSQL."""
    url = backend = None
    if request.param == "amqp":
        pytest.importorskip("amqp")
        url = request.getfixturevalue("rabbitmq_url_module")
        backend = request.getfixturevalue("postgres_url_module")
    with project(tmp_path_factory.mktemp("commcare"), PROJ, broker_url=url,
                 backend_url=backend) as proj, proj.worker(concurrency=2) as worker:
        yield proj, worker


def test_progress_is_visible_while_the_task_runs(
        running: tuple[Project, WorkerProcess]) -> None:
    proj, _ = running
    res = proj.client().my_cool_download.delay()

    wait_until(lambda: res.state == "PROGRESS", what="PROGRESS")
    assert res.info == {"current": 0, "total": 100}
    assert not res.ready()
    (proj.path / "go-50").touch()
    wait_until(lambda: res.info == {"current": 50, "total": 100}, what="50%")
    assert res.state == "PROGRESS"
    (proj.path / "go-100").touch()

    assert res.get(timeout=60) == "payload"
    assert res.state == "SUCCESS"


def test_ignore_after_update_state_is_not_successful(
        running: tuple[Project, WorkerProcess]) -> None:
    proj, worker = running
    res = proj.client().my_cool_task.delay()
    worker.wait_for_log(f"[{res.id}] ignored")
    assert res.state == "FAILURE"  # the state the task set itself; Ignore keeps it
    assert res.state != "SUCCESS"
    assert res.successful() is False


def test_plain_ignore_stores_no_state(running: tuple[Project, WorkerProcess]) -> None:
    proj, worker = running
    res = proj.client().plain_ignore.delay()
    worker.wait_for_log(f"[{res.id}] ignored")
    assert res.state == "PENDING"
    assert res.successful() is False
    assert proj.app.broker.stats("celery").ready == 0


def test_uncaught_error_is_a_failure(running: tuple[Project, WorkerProcess]) -> None:
    proj, _ = running
    client = proj.client()
    res = client.my_uncool_task.delay()
    with pytest.raises(client.SomeError, match="my uncool error"):
        res.get(timeout=60)
    assert res.failed() is True
    assert res.successful() is False


def test_eager_ignore_result_is_the_ignore_instance(tmp_path: Path) -> None:
    """The seed's test: with CELERY_ALWAYS_EAGER, ``res.result`` is an ``Ignore``."""
    from celeriac.exceptions import Ignore

    source = PROJ + '''
    class Settings:
        CELERY_ALWAYS_EAGER = True

    app.config_from_object(Settings)
    '''
    with project(tmp_path, source, module="proj_eager") as proj:
        res = proj.client().my_cool_task.delay()
        assert isinstance(res.result, Ignore)
        assert res.successful() is False
