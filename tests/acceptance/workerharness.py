"""Harness for the worker acceptance tests: a test project, CLI worker subprocesses, run logs.

Imported by the ``test_worker_*`` files (``import workerharness as H``); the
``project_factory`` and ``amqp_project`` fixtures of ``conftest.py`` are
:func:`making_projects`. Tasks record every execution in a separate SQLite file
(``runs.sqlite3``: one row per start and per finish, with the pid) so tests count
how often each task id ran, independently of the broker.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from celeryproc import child_pids
from celeryproc import wait_until as _wait_until

PROJECT = '''
import asyncio, ctypes, os, sqlite3, time
from celeriac import Celery
from celeriac.exceptions import SoftTimeLimitExceeded

app = Celery("proj", broker={broker!r}, backend={backend!r})
app.conf.update({conf!r})
RUNS = {runs!r}
_conn = {{}}


def _db():
    pid = os.getpid()
    if pid not in _conn:
        conn = sqlite3.connect(RUNS, timeout=30, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        _conn.clear()
        _conn[pid] = conn
    return _conn[pid]


def log(task_id, event):
    _db().execute("INSERT INTO runs VALUES (?, ?, ?, ?)",
                  (task_id, event, os.getpid(), time.time()))


@app.task(bind=True)
def work(self, ms):
    log(self.request.id, "start")
    time.sleep(ms / 1000.0)
    log(self.request.id, "done")
    return ms


@app.task(bind=True)
def poison(self):
    log(self.request.id, "start")
    os._exit(1)


@app.task(bind=True)
def long(self, seconds):
    log(self.request.id, "start")
    time.sleep(seconds)
    log(self.request.id, "done")
    return os.getpid()


def _steps(seconds):
    """Sleep in short steps: a thread pool's time limit is raised between bytecodes."""
    for _ in range(int(seconds * 20)):
        time.sleep(0.05)


@app.task(bind=True, soft_time_limit=1)
def soft(self, seconds):
    log(self.request.id, "start")
    try:
        _steps(seconds)
    except SoftTimeLimitExceeded:
        return "soft limit caught"
    return "finished"


@app.task(bind=True, time_limit=1)
def hard(self, seconds):
    log(self.request.id, "start")
    _steps(seconds)
    return "finished"


@app.task(bind=True, time_limit=1, acks_on_timeout=False)
def hard_requeued(self, seconds):
    log(self.request.id, "start")
    _steps(seconds)
    return "finished"


@app.task(bind=True, time_limit=1, acks_on_timeout=True)
def hard_acked(self, seconds):
    log(self.request.id, "start")
    _steps(seconds)
    return "finished"


@app.task(bind=True, time_limit=1, acks_on_failure_or_timeout=False)
async def ahard_requeued(self, seconds):
    log(self.request.id, "start")
    await asyncio.sleep(seconds)
    return "finished"


@app.task(bind=True, default_retry_delay=0)
def die_until(self, kills):
    """kill -9 of the process running it while ``retries`` < ``kills``."""
    log(self.request.id, "start")
    if self.request.retries < kills:
        os.kill(os.getpid(), 9)
    return self.request.retries


@app.task(bind=True, default_retry_delay=0, retry_on_worker_lost=True, max_retries=1)
def die_retried(self, kills):
    log(self.request.id, "start")
    if self.request.retries < kills:
        os.kill(os.getpid(), 9)
    return self.request.retries


@app.task(bind=True, default_retry_delay=0, retry_on_worker_lost=True, max_retries=1,
          acks_late=False)
def die_retried_early(self, kills):
    log(self.request.id, "start")
    if self.request.retries < kills:
        os.kill(os.getpid(), 9)
    return self.request.retries


_in_flight = [0]


@app.task(bind=True)
async def asleep(self, seconds):
    """Returns how many of these were running in this process at once (at least)."""
    _in_flight[0] += 1
    peak = _in_flight[0]
    try:
        await asyncio.sleep(seconds)
        return max(peak, _in_flight[0])
    finally:
        _in_flight[0] -= 1


@app.task(bind=True, soft_time_limit=0.5)
async def asoft(self, seconds):
    try:
        await asyncio.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "async soft limit caught"
    return "finished"


@app.task(bind=True, reject_on_worker_lost=False)
def poison_once(self):
    log(self.request.id, "start")
    os._exit(1)


@app.task
def pid():
    return os.getpid()


@app.task(bind=True)
def hold_gil(self, seconds):
    """libc sleep through PyDLL: this process's GIL stays held the whole time."""
    log(self.request.id, "start")
    ctypes.PyDLL(None).sleep(seconds)
    log(self.request.id, "done")
    return seconds


@app.task(acks_late=False, bind=True)
def early(self, seconds):
    log(self.request.id, "start")
    time.sleep(seconds)
    return "finished"
'''


class Project:
    """A test project in ``tmp_path`` plus the worker processes started for it."""

    def __init__(self, root: Path, broker: str | None = None, backend: str | None = None,
                 conf: dict[str, Any] | None = None) -> None:
        self.root = root
        self.db = str(root / "celeriac.sqlite3")
        self.broker_url = broker or f"sqlite:///{self.db}"
        self.backend_url = backend or f"sqlite:///{self.db}"
        self.runs = str(root / "runs.sqlite3")
        self.module = f"proj_{uuid.uuid4().hex[:8]}"
        self.conf = dict(conf or {})
        with closing(sqlite3.connect(self.runs)) as conn, conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE runs (task_id TEXT, event TEXT, pid INT, at REAL)")
        (root / f"{self.module}.py").write_text(textwrap.dedent(PROJECT.format(
            broker=self.broker_url, backend=self.backend_url, conf=self.conf, runs=self.runs)))
        self.procs: list[subprocess.Popen[bytes]] = []
        self._app: Any = None

    @property
    def app(self) -> Any:
        """The project's app imported in the test process (to publish and read results)."""
        if self._app is None:
            sys.path.insert(0, str(self.root))
            try:
                module = __import__(self.module)
            finally:
                sys.path.remove(str(self.root))
            self._app = module.app
        return self._app

    def task(self, name: str) -> Any:
        return self.app.tasks[f"{self.module}.{name}"]

    def publish_many(self, name: str, arglist: Iterable[tuple[Any, ...]],
                     **options: Any) -> list[str]:
        """Publish many calls in one broker batch; return their task ids."""
        from celeriac.app.publish import build_message
        from celeriac.brokers.base import Publish

        ids, items = [], []
        for args in arglist:
            task_id = str(uuid.uuid4())
            message, queue, not_before, priority = build_message(
                self.app, f"{self.module}.{name}", list(args), {}, task_id, dict(options))
            items.append(Publish(message, queue, not_before, priority))
            ids.append(task_id)
        for start in range(0, len(items), 1000):
            self.app.broker.publish_many(items[start:start + 1000])
        return ids

    # -- workers --------------------------------------------------------------------
    def start_worker(self, *args: str, name: str = "w1") -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop_all
        env = dict(os.environ, PYTHONPATH=str(self.root) + os.pathsep
                   + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "celeriac", "-A", self.module, "worker", "-n", f"{name}@%h",
             "-l", "WARNING", *args], cwd=self.root, env=env, stdout=log, stderr=log,
            start_new_session=True)
        proc.log = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def log_text(self, name: str = "w1") -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        """Teardown: kill every process group this project started."""
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(10)
            else:
                try:  # children of an exited supervisor may linger in its group
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.log.close()  # type: ignore[attr-defined]
        self.procs.clear()

    def close(self) -> None:
        """Teardown: :meth:`stop_all`, then close the test process's app (its connections)."""
        self.stop_all()
        if self._app is not None:
            self._app.close()

    # -- observations -------------------------------------------------------------------
    def runs_by_task(self, event: str = "start") -> Counter[str]:
        with closing(sqlite3.connect(self.runs, timeout=30)) as conn:
            rows = conn.execute("SELECT task_id FROM runs WHERE event = ?", (event,)).fetchall()
        return Counter(r[0] for r in rows)

    def run_rows(self) -> list[tuple[str, str, int, float]]:
        with closing(sqlite3.connect(self.runs, timeout=30)) as conn:
            return conn.execute("SELECT task_id, event, pid, at FROM runs").fetchall()

    def states(self, ids: list[str]) -> Counter[str]:
        metas = {}
        for start in range(0, len(ids), 500):
            metas.update(self.app.backend.get_many(ids[start:start + 500]))
        return Counter(metas[i]["status"] if i in metas else "MISSING" for i in ids)

    def meta(self, task_id: str) -> dict[str, Any] | None:
        return self.app.backend.get(task_id)  # type: ignore[no-any-return]


#: how long before its death a killed child may have started a task that then runs
#: again: its running task, and those it finished but had not acknowledged yet (the
#: adaptive prefetch acknowledges a batch with the next lease, or from the watcher
#: thread once a task runs for 50 ms; a batch holds at most 0.1 s of expected work)
ACK_WINDOW = 1.0


def held_at_kill(project: Any, killed: set[int]) -> set[str]:
    """Tasks a killed child started within :data:`ACK_WINDOW` of its last start (what it
    may have held unsettled when it died): the only ones allowed to run twice."""
    rows = [(tid, pid, at) for tid, event, pid, at in project.run_rows()
            if event == "start" and pid in killed]
    last = {pid: max(at for _, p, at in rows if p == pid) for _, pid, _ in rows}
    return {tid for tid, pid, at in rows if at >= last[pid] - ACK_WINDOW}


def kill_children_at_random(project: Project, worker: subprocess.Popen[bytes], ids: list[str],
                            rng: random.Random, seconds: float = 240.0) -> set[int]:
    """Every 2 s until all of ``ids`` succeeded (at most ``seconds``), SIGKILL one child of
    ``worker`` picked by ``rng``; the pids killed."""
    killed: set[int] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(2.0)
        if project.states(ids)["SUCCESS"] == len(ids):
            break
        children = child_pids(worker.pid)
        if children:
            victim = rng.choice(children)
            os.kill(victim, signal.SIGKILL)
            killed.add(victim)
    return killed


def poison_pill_dead_lettered(project: Project, normal: int, wait: float) -> str:
    """A task that kills its child, among ``normal`` tasks on a two-child worker: the
    normal ones succeed, the poison pill is dead-lettered (``worker_lost``) after exactly
    three deliveries, within ``wait`` seconds after them. Returns its task id."""
    poison_id = project.publish_many("poison", [()])[0]
    ids = project.publish_many("work", [(1,)] * normal)
    project.start_worker("-c", "2")
    wait_until(lambda: project.states(ids)["SUCCESS"] == len(ids), 120,
               what=f"{normal} normal tasks")
    wait_until(lambda: project.app.broker.dead_letters(), wait, what="the dead letter")
    [dead] = project.app.broker.dead_letters()
    assert dead.message.task_id == poison_id
    assert dead.reason.startswith("worker_lost")
    assert project.runs_by_task("start")[poison_id] == 3
    return poison_id


def wait_until(check: Callable[[], Any], timeout: float, interval: float = 0.1,
               what: str = "condition") -> Any:
    """:func:`celeryproc.wait_until` polling every 0.1 s (checks here read thousands of
    results)."""
    return _wait_until(check, timeout, interval, what)


def _redis_available() -> bool:
    try:
        import celeriac.brokers.redis.client  # noqa: F401
    except ImportError:
        return False
    return True


def _postgres_available() -> bool:
    try:
        import celeriac.brokers.postgres.broker  # noqa: F401
    except ImportError:
        return bool(os.environ.get("CI"))  # CI must run it (and fail on the import)
    return True


BROKERS = (["sqlite"] + (["redis"] if _redis_available() else [])
           + (["postgres"] if _postgres_available() else []))


@contextmanager
def making_projects(root: Path, broker: str | None = None, backend: str | None = None,
                    **defaults: Any) -> Iterator[Callable[..., Project]]:
    """``make(**conf)`` makes a :class:`Project` in ``root`` (``defaults`` under ``conf``);
    afterwards every project is closed and the end of each worker log printed (pytest
    shows it when the test failed)."""
    projects: list[Project] = []

    def make(**conf: Any) -> Project:
        project = Project(root, broker=broker, backend=backend, conf={**defaults, **conf})
        projects.append(project)
        return project

    try:
        yield make
    finally:
        for project in projects:
            project.close()
        for log in sorted(root.glob("*.log")):
            print(f"--- {log.name} (end) ---\n{log.read_text(errors='replace')[-4000:]}")
