"""An embedded worker for tests (Celery's ``celery.contrib.testing.worker``).

:func:`start_worker` runs the real worker (:class:`~celeriac.worker.main.Worker`:
its consumer, pool, leases, acknowledgements, result storage, retries and canvas)
in a thread of the test process, on whatever broker the app uses (the memory
broker for the test app), and stops it when the block ends. Unlike eager mode,
every call goes through serialization, routing and the broker.

Differences from a ``celeriac worker`` process, all because it shares the test's
process: no signal handlers (the test runner keeps SIGINT), no root-logger
setup unless ``loglevel`` asks for it, the ``solo``, ``threads`` and
``asyncio`` pools only (``prefork`` is replaced by ``threads`` with a warning),
leases renewed from a thread, and a task that outlives the shutdown timeout
makes :func:`start_worker` raise instead of exiting the process.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ...app.base import Celery
from ...signals import Signal, worker_ready
from ...worker.main import Worker

logger = logging.getLogger("celeriac.testing")

WORKER_LOGLEVEL = os.environ.get("WORKER_LOGLEVEL", "error")
#: Pools that run in the test's process.
IN_PROCESS_POOLS = ("solo", "threads", "asyncio")
#: Worker options :func:`start_worker` passes on (Celery's names where they exist).
WORKER_OPTIONS = frozenset({"queues", "exclude_queues", "hostname", "beat",
                            "prefetch_multiplier", "setup_logs", "liveness_file",
                            "poll_timeout", "without_heartbeat"})
#: Celery's WorkController switches for steps celeriac does not have: accepted, no effect.
NO_SUCH_STEPS = frozenset({"without_mingle", "without_gossip", "ready_callback"})

test_worker_starting = Signal("test_worker_starting")
test_worker_started = Signal("test_worker_started")
test_worker_stopped = Signal("test_worker_stopped")


class TestWorkController(Worker):
    """A :class:`Worker` that runs in a thread of the test process and says when it is up."""

    __test__ = False  # not a test class, though its name starts with "Test"

    def __init__(self, app: Celery, **options: Any) -> None:
        for name in NO_SUCH_STEPS:
            options.pop(name, None)
        options.setdefault("poll_timeout", 0.1)  # stops within 0.1 s of the block's end
        # Celery's test worker runs without its heartbeat step: no worker-* events
        options.setdefault("without_heartbeat", True)
        super().__init__(app, **options)
        self._on_started = threading.Event()
        self.failure: BaseException | None = None
        #: seconds the shutdown waits for running tasks (``start_worker(shutdown_timeout=)``)
        self.shutdown_timeout = 10.0

    def shutdown_grace(self) -> float:
        return self.shutdown_timeout

    def _renewal(self) -> None:
        """Leases renewed from a thread of this process (no renewer process per test)."""
        return None

    def _install_signals(self) -> None:
        """The test runner keeps its signal handlers."""

    def _abandon_running(self) -> None:
        logger.warning("test worker %s: tasks still running after shutdown; their messages "
                       "were given back", self.hostname)

    def on_consumer_ready(self, **_: Any) -> None:
        self._on_started.set()

    def ensure_started(self, timeout: float | None = None) -> bool:
        """Wait until the consumer runs (or the worker failed to start)."""
        return self._on_started.wait(timeout)

    def reload(self, *args: Any, **kwargs: Any) -> None:
        """Celery's ``celery_worker.reload()`` after registering a task: nothing to do,
        the worker looks tasks up in ``app.tasks`` for every message it receives."""

    def run_in_thread(self) -> None:
        try:
            self.start()
        except BaseException as exc:
            self.failure = exc
            logger.exception("test worker %s failed", self.hostname)
        finally:
            self._on_started.set()


_counter = iter(range(1, 1 << 62))


@contextmanager
def start_worker(app: Celery, concurrency: int = 1, pool: str = "solo",
                 loglevel: str | int = WORKER_LOGLEVEL, logfile: str | None = None,
                 perform_ping_check: bool = True, ping_task_timeout: float = 10.0,
                 shutdown_timeout: float = 10.0, **kwargs: Any) -> Iterator[TestWorkController]:
    """Run a worker for ``app`` in a thread while the block runs; yield it.

    As Celery's: ``perform_ping_check`` sends ``celery.ping`` and waits for
    ``'pong'`` (the app must have :mod:`.tasks` imported, which :func:`TestApp`
    does); ``shutdown_timeout`` bounds the wait for running tasks at the end, after
    which :class:`RuntimeError` is raised. ``kwargs`` go to the worker
    (``queues``, ``hostname``, ``beat``, ``prefetch_multiplier``...).
    """
    test_worker_starting.send(sender=app)
    worker: TestWorkController | None = None
    try:
        with _start_worker_thread(app, concurrency=concurrency, pool=pool, loglevel=loglevel,
                                  logfile=logfile, perform_ping_check=perform_ping_check,
                                  shutdown_timeout=shutdown_timeout, **kwargs) as worker:
            if perform_ping_check:
                ping = app.tasks["celery.ping"]
                assert ping.delay().get(timeout=ping_task_timeout) == "pong"
            yield worker
    finally:
        test_worker_stopped.send(sender=app, worker=worker)


@contextmanager
def _start_worker_thread(app: Celery, concurrency: int = 1, pool: str = "solo",
                         loglevel: str | int = WORKER_LOGLEVEL, logfile: str | None = None,
                         perform_ping_check: bool = True, shutdown_timeout: float = 10.0,
                         **kwargs: Any) -> Iterator[TestWorkController]:
    setup_app_for_worker(app)
    if perform_ping_check and "celery.ping" not in app.tasks:
        raise RuntimeError("start_worker(perform_ping_check=True) needs the celery.ping task: "
                           "import celeriac.contrib.testing.tasks (TestApp does)")
    if pool not in IN_PROCESS_POOLS:
        logger.warning("start_worker: the %r pool cannot run inside the test process; "
                       "using 'threads'", pool)
        pool = "threads"
    unknown = sorted(set(kwargs) - WORKER_OPTIONS - NO_SUCH_STEPS)
    if unknown:
        raise TypeError(f"start_worker: unknown worker option(s) {', '.join(unknown)} "
                        f"(known: {', '.join(sorted(WORKER_OPTIONS | NO_SUCH_STEPS))})")
    hostname = kwargs.pop("hostname", None) or f"testworker{next(_counter)}@{os.getpid()}"
    if isinstance(loglevel, int):
        loglevel = logging.getLevelName(loglevel)
    exclude = kwargs.pop("exclude_queues", None) or ()
    if isinstance(exclude, str):  # Celery's form: "a,b"
        exclude = [name.strip() for name in exclude.split(",")]
    exclude = set(exclude)
    queues = kwargs.pop("queues", None)
    if queues is not None or exclude:
        queues = [q for q in (list(queues) if queues is not None
                              else [app.conf.task_default_queue]) if q not in exclude]
    setup_logs = kwargs.pop("setup_logs", logfile is not None
                            or bool(getattr(app, "test_enable_logging", False)))
    worker = TestWorkController(app, hostname=hostname, concurrency=concurrency, pool=pool,
                                loglevel=str(loglevel), logfile=logfile, queues=queues,
                                setup_logs=setup_logs, **kwargs)
    worker.shutdown_timeout = shutdown_timeout

    def ready(sender: Any = None, **_: Any) -> None:
        if sender is worker:
            worker.on_consumer_ready()
            test_worker_started.send(sender=app, worker=worker, consumer=worker.consumer)

    worker_ready.connect(ready)
    thread = threading.Thread(target=worker.run_in_thread, name=f"celeriac-{hostname}",
                              daemon=True)
    try:
        thread.start()
        worker.ensure_started()
        if worker.failure is not None:
            raise RuntimeError(f"the test worker did not start: {worker.failure}") \
                from worker.failure
        yield worker
    finally:
        worker.stop()
        thread.join(shutdown_timeout + 5.0)
        worker_ready.disconnect(ready)
        if thread.is_alive():
            raise RuntimeError("Worker thread failed to exit within the allocated timeout. "
                               "Consider raising `shutdown_timeout` if your tasks take "
                               "longer to execute.")


def setup_app_for_worker(app: Celery, *args: Any) -> None:
    """Finalize ``app`` and make it the current app, as the worker process would."""
    app.finalize()
    app.set_current()
    app.set_default()
