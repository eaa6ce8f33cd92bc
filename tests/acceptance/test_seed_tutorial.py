"""Seed 002 (the Celery tutorial notes) re-run against a real worker process.

Covers: ``add.delay(2, 2).get(timeout=1) == 4``, ``res.id``, ``res.state``,
``successful()``/``failed()``, countdown, eta, ``countdown`` + ``expires``,
``autoretry_for`` with ``retry_kwargs``, ``Reject`` with ``acks_late`` and the
``redelivered`` flag, and ``Reject(exc, requeue=False)`` into the dead-letter store.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from workerproc import Project, WorkerProcess, project, read_lines, wait_until

PROJ = '''
    import errno
    import time
    from pathlib import Path

    from celeriac import Celery
    from celeriac.exceptions import Reject

    app = Celery("proj")
    HERE = Path(__file__).parent


    def note(name, line):
        with open(HERE / name, "a") as fh:
            fh.write(f"{line}\\n")


    @app.task
    def add(x, y):
        z = x + y
        print(z)
        return z


    @app.task
    def stamp(label):
        note("stamps", label)
        return time.time()


    class twitter:
        @staticmethod
        def refresh_timeline(user):
            note("attempts", user)
            if len((HERE / "attempts").read_text().splitlines()) < 3:
                raise ConnectionError("twitter is down")
            return f"timeline of {user}"


    @app.task(
        autoretry_for=(ConnectionError,),
        retry_kwargs={'max_retries': 5},
        default_retry_delay=0.2)
    def refresh_timeline(user):
        return twitter.refresh_timeline(user)


    @app.task(bind=True, acks_late=True)
    def requeues(self):
        note("requeues", repr(self.request.delivery_info["redelivered"]))
        if not self.request.delivery_info['redelivered']:
            raise Reject('no reason', requeue=True)
        print('received two times')


    def get_file(path):
        return path


    class renderer:
        @staticmethod
        def render_scene(file):
            note("renders", file)
            if file == "huge.blend":
                raise MemoryError("scene does not fit in memory")
            if file == "enomem.blend":
                raise OSError(errno.ENOMEM, "Cannot allocate memory")
            return f"rendered {file}"


    @app.task(bind=True, acks_late=True)
    def render_scene(self, path):
        file = get_file(path)
        try:
            return renderer.render_scene(file)

        # if the file is too big to fit in memory
        # we reject it so that it's redelivered to the dead letter exchange
        # and we can manually inspect the situation.
        except MemoryError as exc:
            raise Reject(exc, requeue=False)
        except OSError as exc:
            if exc.errno == errno.ENOMEM:
                raise Reject(exc, requeue=False)

        # For any other error we retry after 10 seconds.
        except Exception as exc:
            raise self.retry(exc, countdown=10)
'''


@pytest.fixture(scope="module", params=["sqlite", "postgres", "amqp", "redis-cluster"])
def running(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Project, WorkerProcess]]:
    """One worker per broker for the whole module: the tutorial examples share a project
    (the embedded SQLite default, then PostgreSQL as broker and result store, then
    RabbitMQ with the results in PostgreSQL, then a local Redis Cluster as broker and
    result store; the cluster's keys are this module's alone: no other test uses them
    unprefixed)."""
    url = backend = None
    if request.param in ("postgres", "amqp"):
        url = backend = request.getfixturevalue("postgres_url_module")
    if request.param == "amqp":
        pytest.importorskip("amqp")
        url = request.getfixturevalue("rabbitmq_url_module")
    if request.param == "redis-cluster":
        url = backend = request.getfixturevalue("redis_cluster").url
    with project(tmp_path_factory.mktemp("tutorial"), PROJ, broker_url=url,
                 backend_url=backend) as proj, proj.worker(concurrency=4) as worker:
        proj.client().add.delay(0, 0).get(timeout=60)  # warm-up: the worker is polling
        if url:
            assert proj.app.broker.url == url and proj.app.backend_url == backend
        yield proj, worker


@pytest.fixture
def proj(running: tuple[Project, WorkerProcess]) -> Project:
    return running[0]


@pytest.fixture
def worker(running: tuple[Project, WorkerProcess]) -> WorkerProcess:
    return running[1]


def test_add_delay_get_with_a_one_second_timeout(proj: Project) -> None:
    res = proj.client().add.delay(2, 2)
    assert res.get(timeout=1) == 4


def test_result_attributes_and_methods(proj: Project) -> None:
    res = proj.client().add.delay(2, 2)
    assert res.get(timeout=30) == 4
    assert str(uuid.UUID(res.id)) == res.id
    assert res.state == "SUCCESS"
    assert res.status == "SUCCESS"
    assert res.successful() is True
    assert res.failed() is False
    assert res.ready() is True


def test_print_in_a_task_reaches_the_worker_log(proj: Project, worker: WorkerProcess) -> None:
    assert proj.client().add.delay(1234, 1).get(timeout=30) == 1235
    worker.wait_for_log("1235")


def test_countdown_runs_after_the_delay(proj: Project) -> None:
    sent = time.time()
    res = proj.client().stamp.apply_async(("countdown",), countdown=1)
    ran_at = res.get(timeout=30)
    assert ran_at >= sent + 1 - 0.05


def test_eta_runs_at_the_given_time(proj: Project) -> None:
    eta = datetime.now(timezone.utc) + timedelta(seconds=1)
    res = proj.client().stamp.apply_async(("eta",), eta=eta)
    assert res.get(timeout=30) >= eta.timestamp() - 0.05


def test_countdown_past_expires_is_revoked_and_never_runs(proj: Project) -> None:
    res = proj.client().stamp.apply_async(("expired",), countdown=2, expires=1)
    wait_until(lambda: res.state == "REVOKED", what="REVOKED")
    assert "expired" not in read_lines(proj.path / "stamps")
    assert res.failed() is False and res.successful() is False


def test_autoretry_for_with_retry_kwargs(proj: Project) -> None:
    res = proj.client().refresh_timeline.delay("ada")
    assert res.get(timeout=60) == "timeline of ada"
    assert read_lines(proj.path / "attempts") == ["ada", "ada", "ada"]
    assert res.state == "SUCCESS"


def test_reject_requeue_is_redelivered_once(proj: Project, worker: WorkerProcess) -> None:
    res = proj.client().requeues.delay()
    wait_until(lambda: res.state == "SUCCESS", what="the second delivery to succeed")
    assert read_lines(proj.path / "requeues") == ["False", "True"]
    worker.wait_for_log("received two times")


@pytest.mark.parametrize("path", ["huge.blend", "enomem.blend"])
def test_reject_without_requeue_goes_to_the_dead_letter_store(proj: Project,
                                                              path: str) -> None:
    broker = proj.app.broker
    res = proj.client().render_scene.delay(path)
    dead = wait_until(lambda: [d for d in broker.dead_letters("celery")
                               if d.message.task_id == res.id], what="the dead letter")
    assert dead[0].reason.startswith("rejected")
    assert read_lines(proj.path / "renders").count(path) == 1
    stats = broker.stats("celery")
    assert (stats.ready, stats.leased) == (0, 0)
    assert res.state != "SUCCESS"


def test_render_scene_success(proj: Project) -> None:
    assert proj.client().render_scene.delay("small.blend").get(timeout=30) == (
        "rendered small.blend")


def test_signatures_read_like_celery_and_run_on_the_worker(proj: Project) -> None:
    add = proj.client().add
    assert repr(add.s(2, 2, debug=True)) == "proj.add(2, 2, debug=True)"
    # The seed shows debug=True here too, but Celery 5.7 itself treats it as an
    # option of the signature, not an argument: repr is proj.add(2, 2).
    sig = add.signature((2, 2), debug=True)
    assert repr(sig) == "proj.add(2, 2)"
    assert sig.options["debug"] is True
    assert add.s(2, 2).delay().get(timeout=30) == 4
    assert add.s(2).delay(5).get(timeout=30) == 7
