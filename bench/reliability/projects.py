"""The throw-away task project of a reliability run, its worker processes and its run ledger.

One project is written per run into a temporary directory, once for celeriac
(``from celeriac import Celery``) and once for Celery 5.7 (``from celery import
Celery``) with the same tasks, so both systems are counted the same way. Every
task takes a ``key`` (the suite's own name for that call, independent of task
ids and of the broker) and appends one row per start and per finish to a
SQLite file of its own, the **ledger** (``runs(key, event, pid, at)``): what
ran, in which process, when. The broker is never asked what ran.

Workers are started from each system's own CLI in a new session (their pid is
their process group), so a scenario can kill one child, the supervisor alone, or
the whole tree, and ``stop()`` always removes everything a worker started.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from celeryproc import child_pids  # the suite's /proc reader, shared

TASKS = '''
import ctypes, os, sqlite3, time

LEDGER = {ledger!r}
_conn = {{}}


def record(key, event):
    pid = os.getpid()
    conn = _conn.get(pid)
    if conn is None:
        conn = sqlite3.connect(LEDGER, timeout=60, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA synchronous=OFF")
        _conn.clear()
        _conn[pid] = conn
    conn.execute("INSERT INTO runs VALUES (?, ?, ?, ?)", (str(key), event, pid, time.time()))


@app.task(name="reliability.work")
def work(key, ms):
    record(key, "start")
    if ms:
        time.sleep(ms / 1000.0)
    record(key, "done")
    return ms


@app.task(name="reliability.hold_gil")
def hold_gil(key, seconds):
    """libc sleep through PyDLL: the process's GIL stays held the whole time."""
    record(key, "start")
    ctypes.PyDLL(None).sleep(int(seconds))
    record(key, "done")
    return seconds
'''

CELERIAC_HEAD = '''
from celeriac import Celery

app = Celery("reliability", broker={broker!r}, backend={backend!r})
app.conf.update({conf!r})
'''

CELERY_HEAD = '''
from celery import Celery

app = Celery("reliability", broker={broker!r}, backend={backend!r})
app.conf.update({conf!r})
'''

#: environment variables that would point a project at another broker
OVERRIDING_ENV = ("CELERIAC_BROKER_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND",
                  "CELERIAC_APP", "CELERIAC_SQLITE_PATH", "CELERIAC_RESULT_BACKEND")


@dataclass(frozen=True)
class Run:
    """One ledger row."""

    key: str
    event: str
    pid: int
    at: float


def backend_for(system: str, broker_url: str, root: Path) -> str | None:
    """Results live in the broker's own store where it has one; celeriac on RabbitMQ
    keeps them in a SQLite file of the run (so a message redelivered after its task
    ended finds its outcome and is not run again), Celery on RabbitMQ keeps none."""
    if broker_url.startswith("amqp"):
        return f"sqlite:///{root / 'results.sqlite3'}" if system == "celeriac" else None
    if system == "celery" and broker_url.startswith("redis"):
        return broker_url
    return broker_url if system == "celeriac" else None


class Project:
    """A project (``system`` = ``celeriac`` or ``celery``) on one broker, in ``root``."""

    def __init__(self, root: Path, system: str, broker_url: str,
                 conf: dict[str, Any] | None = None) -> None:
        self.root, self.system, self.broker_url = root, system, broker_url
        root.mkdir(parents=True, exist_ok=True)
        self.ledger = str(root / "ledger.sqlite3")
        self.module = f"rel_{system}_{uuid.uuid4().hex[:8]}"
        with sqlite3.connect(self.ledger) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS runs (key TEXT, event TEXT, pid INT, "
                         "at REAL)")
        head = CELERIAC_HEAD if system == "celeriac" else CELERY_HEAD
        text = head.format(broker=broker_url, backend=backend_for(system, broker_url, root),
                           conf=dict(conf or {})) + TASKS.format(ledger=self.ledger)
        (root / f"{self.module}.py").write_text(textwrap.dedent(text))
        self.workers: list[subprocess.Popen[bytes]] = []
        self._module: Any = None

    # -- the project in this process (to publish) ------------------------------------------
    @property
    def tasks(self) -> Any:
        """The project module imported here: ``.app``, ``.work``, ``.hold_gil``."""
        if self._module is None:
            sys.path.insert(0, str(self.root))
            try:
                self._module = __import__(self.module)
            finally:
                sys.path.remove(str(self.root))
        return self._module

    def close(self) -> None:
        self.stop_all()
        if self._module is not None:
            close = getattr(self._module.app, "close", None)
            if close is not None:
                close()

    # -- workers ----------------------------------------------------------------------------
    def start_worker(self, *args: str, name: str = "w1") -> subprocess.Popen[bytes]:
        """A worker from the system's own CLI (default pool, ``-c 2`` unless given)."""
        env = {k: v for k, v in os.environ.items() if k not in OVERRIDING_ENV}
        env.update(PYTHONPATH=str(self.root), PYTHONUNBUFFERED="1")
        extra = ["--without-mingle", "--without-gossip"] if self.system == "celery" else []
        if "-c" not in args and "-P" not in args:
            args = ("-c", "2", *args)
        with open(self.root / f"{self.system}-{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", self.system, "-A", self.module, "worker", "-n",
                 f"{name}-{self.module}@%h", "-l", "WARNING", *extra, *args],
                cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.workers.append(proc)
        return proc

    def log_text(self, name: str = "w1") -> str:
        path = self.root / f"{self.system}-{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL to whatever is left of its group."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        kill_group(proc)

    def stop_all(self) -> None:
        for proc in self.workers:
            self.stop(proc, timeout=10)
        self.workers.clear()

    # -- the ledger ---------------------------------------------------------------------------
    def runs(self) -> list[Run]:
        with sqlite3.connect(self.ledger, timeout=60) as conn:
            rows = conn.execute("SELECT key, event, pid, at FROM runs ORDER BY at").fetchall()
        return [Run(*row) for row in rows]

    def done_count(self, prefix: str = "") -> int:
        with sqlite3.connect(self.ledger, timeout=60) as conn:
            row = conn.execute("SELECT COUNT(DISTINCT key) FROM runs WHERE event = 'done' "
                               "AND key LIKE ?", (prefix + "%",)).fetchone()
        return int(row[0])


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL every process of the worker's session (children of a dead supervisor too)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


def tree_rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` and its descendants, KiB (``VmRSS`` from /proc)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            with open(f"/proc/{current}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
        todo.extend(child_pids(current))
    return total


def wait_for(check: Any, timeout: float, interval: float = 0.2) -> bool:
    """Poll ``check()`` until it is true or ``timeout`` passes; return the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
