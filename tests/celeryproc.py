"""Worker subprocesses and task modules for the interop and kill tests, and polling.

A test writes a task module into ``tmp_path`` (one flavour per library), imports
the client flavour in its own process with :func:`import_client`, and starts the
other side's worker with :class:`WorkerProcess`: ``tmp_path`` on ``PYTHONPATH``,
output in a log file, ready when a line of the log says so, stopped with SIGTERM
and then SIGKILL. Tests that kill workers at arbitrary moments start them with
:func:`start_worker_group` and kill the whole group with :func:`kill_group`.
:func:`wait_until` is the suite's one polling helper (``tests/`` is on ``sys.path``
in every tier); :func:`child_pids` and :func:`zombie` read a process's children and
state from ``/proc`` (the reliability bench uses them too).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import TypeVar

T = TypeVar("T")
#: seconds a worker may take to say it is ready (a loaded CI machine is slow to start one)
READY_TIMEOUT = 90.0
#: what celeriac and Celery workers print once they consume
READY = "ready."
#: settings in the environment that would override a test's task modules' own
CONFIG_ENV = ("CELERIAC_BROKER_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND",
              "CELERIAC_RESULT_BACKEND")


def wait_until(check: Callable[[], T], timeout: float = 30.0, interval: float = 0.05,
               what: str = "condition") -> T:
    """``check()``'s first true value, polled every ``interval`` seconds; AssertionError
    naming ``what`` after ``timeout`` seconds. The one polling helper of the test suite."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def child_pids(pid: int) -> list[int]:
    """Live (not zombie) direct children of ``pid``, sorted (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)


def zombie(pid: int) -> bool:
    """True when ``pid`` has exited and waits to be reaped, or is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def worker_command(side: str, module: str, *options: str, concurrency: int = 1,
                   name: str = "interop") -> list[str]:
    """An interop test's worker: ``celeriac worker -P threads -c N`` or ``celery worker
    -P solo`` with a unique node name and no mingle/gossip/heartbeat, both at INFO, with
    ``options`` (``-Q ...``) added."""
    if side == "celeriac":
        return [sys.executable, "-m", "celeriac", "-A", module, "worker", "-P", "threads",
                "-c", str(concurrency), *options, "-l", "INFO"]
    return [sys.executable, "-m", "celery", "-A", module, "worker", "-P", "solo",
            "-n", f"{name}-{uuid.uuid4().hex[:6]}@localhost", *options,
            "--without-mingle", "--without-gossip", "--without-heartbeat", "-l", "INFO"]


def subprocess_env(cwd: Path, drop: Iterable[str] = (),
                   extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment less ``drop``, plus ``extra``, with ``cwd`` first on
    ``PYTHONPATH``."""
    removed = set(drop)
    env = {k: v for k, v in os.environ.items() if k not in removed}
    env.update(extra or {})
    env["PYTHONPATH"] = os.pathsep.join([str(cwd), os.environ.get("PYTHONPATH", "")])
    return env


def start_worker_group(cwd: Path, module: str, *args: str,
                       log: str | None = None) -> subprocess.Popen[bytes]:
    """``python -m celeriac -A <module> worker -l WARNING ARGS`` in ``cwd`` (first on
    ``PYTHONPATH``), its output in ``cwd/<log>`` (default: a new ``worker-<ns>.log``), in
    a new session: its pid is the process group of the worker and every child it
    starts (:func:`kill_group`). Not waited for: the test watches what it does."""
    with open(cwd / (log or f"worker-{time.monotonic_ns()}.log"), "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celeriac", "-A", module, "worker", "-l", "WARNING", *args],
            cwd=cwd, env=subprocess_env(cwd), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group of a :func:`start_worker_group` worker, and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker and every child it started
    except ProcessLookupError:
        pass
    proc.wait(10)


def import_client(tmp_path: Path, module: str) -> ModuleType:
    """Import ``tmp_path/<module>.py`` in this process under a unique name."""
    spec = importlib.util.spec_from_file_location(f"{module}_{uuid.uuid4().hex[:8]}",
                                                  tmp_path / f"{module}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class WorkerProcess:
    """A worker (or any long-running command) started in ``cwd``, logging to a file."""

    def __init__(self, command: list[str], cwd: Path, ready: str = READY,
                 drop_env: Iterable[str] = (), env: Mapping[str, str] | None = None,
                 timeout: float = READY_TIMEOUT) -> None:
        self.log_path = cwd / f"worker-{uuid.uuid4().hex[:6]}.log"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(command, cwd=cwd,
                                         env=subprocess_env(cwd, drop_env, env),
                                         stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: ready in self.log or self.proc.poll() is not None,
                       timeout, what="the worker to be ready")
        except AssertionError:
            self.stop()
            raise AssertionError(f"worker not ready after {timeout:.0f}s:\n{self.log}")
        assert self.proc.poll() is None, f"worker exited early:\n{self.log}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
