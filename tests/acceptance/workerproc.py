"""Acceptance-test helper: a throw-away project directory, real worker processes, the CLI.

:class:`Project` writes a project module into a temporary directory, points
the embedded SQLite broker at a file there (``CELERIAC_SQLITE_PATH``), runs
``python -m celeriac -A <module> ...`` commands in it, and starts workers as
real subprocesses (:class:`WorkerProcess`): ``start`` waits for the
``ready.`` log line, ``stop`` sends SIGTERM, waits, and SIGKILLs if needed.
:meth:`Project.client` imports the same module in the test process, so a
test calls ``proj.add.delay(2, 2)`` exactly as user code would.
:func:`project_fixture` makes a test file's ``proj`` fixture from its project source.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from celeryproc import wait_until

#: Generous limits: the suite runs on a loaded 2-core machine.
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 45.0
CLI_TIMEOUT = 60.0
#: Environment variables that would point a project away from its own SQLite file.
OVERRIDING_ENV = ("CELERIAC_BROKER_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND",
                  "CELERIAC_APP")


class WorkerProcess:
    """A ``celeriac worker`` subprocess whose output goes to a log file."""

    def __init__(self, project: Project, args: tuple[str, ...]) -> None:
        self.project = project
        self.args = args
        self.log_path = project.path / f"worker-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "celeriac", "-A", self.project.module, "worker",
                *self.args]

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, ready_timeout: float = READY_TIMEOUT) -> WorkerProcess:
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(self.command, cwd=self.project.path,
                                         env=self.project.env(), stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_timeout
        while "ready." not in self.log:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode} before "
                                     f"it was ready:\n{self.log}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"worker not ready after {ready_timeout:.0f}s:\n{self.log}")
            time.sleep(0.05)
        return self

    def wait_for_log(self, text: str, timeout: float = 30.0, count: int = 1) -> str:
        """Wait until ``text`` appears ``count`` times in the worker's output."""
        return wait_until(lambda: self.log if self.log.count(text) >= count else "",
                          timeout, what=f"{text!r} x{count} in the worker log:\n{self.log}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (warm shutdown), wait, SIGKILL if it hangs; return the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.returncode = self.proc.returncode
        return self.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Project:
    """A project module in ``path`` plus its embedded SQLite database file."""

    def __init__(self, path: Path, source: str, module: str = "proj",
                 broker_url: str | None = None, backend_url: str | None = None) -> None:
        self.path = path
        self.module = module
        #: when set, broker and result store URL for workers and client (env override)
        self.broker_url = broker_url
        #: the result store URL when it is not the broker's (RabbitMQ with Redis results)
        self.backend_url = backend_url or broker_url
        self.db_path = path / "db.sqlite3"
        (path / f"{module}.py").write_text(textwrap.dedent(source))
        self._client: ModuleType | None = None
        self._workers: list[WorkerProcess] = []
        self._saved_env: dict[str, str | None] = {}

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in OVERRIDING_ENV}
        env["CELERIAC_SQLITE_PATH"] = str(self.db_path)
        env["PYTHONUNBUFFERED"] = "1"
        if self.broker_url:
            env["CELERIAC_BROKER_URL"] = self.broker_url
            env["CELERIAC_RESULT_BACKEND"] = str(self.backend_url)
        env.update(extra)
        return env

    def cli(self, *args: str, timeout: float = CLI_TIMEOUT, input: str | None = None,
            **env: str) -> subprocess.CompletedProcess[str]:
        """Run ``python -m celeriac -A <module> ARGS`` in the project directory (``input``:
        its standard input)."""
        return self.raw_cli("-A", self.module, *args, timeout=timeout, input=input, **env)

    def raw_cli(self, *args: str, timeout: float = CLI_TIMEOUT, input: str | None = None,
                **env: str) -> subprocess.CompletedProcess[str]:
        """Run ``python -m celeriac ARGS`` (no ``-A``) in the project directory."""
        return subprocess.run([sys.executable, "-m", "celeriac", *args], cwd=self.path,
                              env=self.env(**env), capture_output=True, text=True,
                              timeout=timeout, check=False, input=input)

    @contextmanager
    def worker(self, *args: str, pool: str = "threads", concurrency: int | None = 2,
               loglevel: str = "INFO") -> Iterator[WorkerProcess]:
        """A running worker for the ``with`` block; always stopped afterwards.

        ``concurrency=None`` leaves ``-c`` out, so the app's settings decide.
        """
        options: tuple[str, ...] = ("-P", pool, "-l", loglevel)
        if concurrency is not None:
            options += ("-c", str(concurrency))
        proc = WorkerProcess(self, (*options, *args))
        self._workers.append(proc)
        try:
            yield proc.start()
        finally:
            proc.stop()

    def client(self) -> ModuleType:
        """Import the project module in this process (the producer side)."""
        if self._client is None:
            self._saved_env = {k: os.environ.pop(k, None)
                               for k in (*OVERRIDING_ENV, "CELERIAC_SQLITE_PATH",
                                         "CELERIAC_RESULT_BACKEND")}
            os.environ["CELERIAC_SQLITE_PATH"] = str(self.db_path)
            if self.broker_url:
                os.environ["CELERIAC_BROKER_URL"] = self.broker_url
                os.environ["CELERIAC_RESULT_BACKEND"] = str(self.backend_url)
            sys.path.insert(0, str(self.path))  # sibling modules (settings, tasks)
            spec = importlib.util.spec_from_file_location(self.module,
                                                          self.path / f"{self.module}.py")
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[self.module] = module
            spec.loader.exec_module(module)
            self._client = module
        return self._client

    @property
    def app(self) -> Any:
        return self.client().app

    def close(self) -> None:
        for proc in self._workers:
            proc.stop()
        if self._client is not None:
            self._client.app.close()
            sys.path.remove(str(self.path))
            for name, module in list(sys.modules.items()):
                origin = getattr(module, "__file__", None) or ""
                if origin.startswith(str(self.path) + os.sep):
                    del sys.modules[name]
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            self._client = None


@contextmanager
def project(tmp_path: Path, source: str, module: str = "proj",
            broker_url: str | None = None,
            backend_url: str | None = None) -> Iterator[Project]:
    """A :class:`Project` that stops its workers and unloads its module on exit."""
    proj = Project(tmp_path, source, module, broker_url=broker_url, backend_url=backend_url)
    try:
        yield proj
    finally:
        proj.close()


def project_fixture(source: str, **files: str) -> Any:
    """A ``proj`` fixture: the project ``source`` (and ``files``: module name -> source,
    written beside it) in the test's ``tmp_path``."""
    @pytest.fixture
    def proj(tmp_path: Path) -> Iterator[Project]:
        with project(tmp_path, source) as made:
            for name, text in files.items():
                (tmp_path / f"{name}.py").write_text(text)
            yield made

    return proj


def read_lines(path: Path) -> list[str]:
    """Lines a task appended to a side-effect file (empty if it never ran)."""
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []
