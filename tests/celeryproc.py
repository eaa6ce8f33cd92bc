"""Worker subprocesses and task modules for the interop tests (celeriac and real Celery).

A test writes a task module into ``tmp_path`` (one flavour per library), imports
the client flavour in its own process with :func:`import_client`, and starts the
other side's worker with :class:`WorkerProcess`: ``tmp_path`` on ``PYTHONPATH``,
output in a log file, ready when a line of the log says so, stopped with SIGTERM
and then SIGKILL.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

#: seconds a worker may take to say it is ready (a loaded CI machine is slow to start one)
READY_TIMEOUT = 90.0
#: what celeriac and Celery workers print once they consume
READY = "ready."


def wait_for(check: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.05) -> Any:
    """``check()``'s first true value; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def subprocess_env(cwd: Path, drop: Iterable[str] = (),
                   extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment less ``drop``, plus ``extra``, with ``cwd`` first on
    ``PYTHONPATH``."""
    removed = set(drop)
    env = {k: v for k, v in os.environ.items() if k not in removed}
    env.update(extra or {})
    env["PYTHONPATH"] = os.pathsep.join([str(cwd), os.environ.get("PYTHONPATH", "")])
    return env


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
            wait_for(lambda: ready in self.log or self.proc.poll() is not None,
                     timeout, "the worker to be ready")
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
