"""Private servers that outage tests may stop and start: never the shared ones.
:func:`rabbit_server` is the reliability suite's private RabbitMQ node.

:class:`OwnRedis` runs ``redis-server`` on a free port with its data in a temporary
directory (AOF on, so messages survive a restart); :class:`OwnPostgres` runs a
throw-away PostgreSQL cluster (``initdb``/``pg_ctl`` from
``/usr/lib/postgresql/*/bin``) on a free port. Each can be stopped and started
again with the same data (:meth:`stop`/:meth:`start`), or paused (``SIGSTOP``,
:meth:`pause`/:meth:`resume`). Only processes started here are signalled, by PID.
A missing binary skips the test, or fails it under ``CI=true``.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from needs import IN_CI


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} not installed (CI=true: required)", pytrace=False)
    pytest.skip(f"{what} not installed")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class OwnRedis:
    """A private ``redis-server`` with an append-only file in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        if shutil.which("redis-server") is None:
            _missing("redis-server")
        self.port, self.workdir = free_port(), workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = subprocess.run(["redis-cli", "-p", str(self.port), "ping"],
                                 capture_output=True, text=True, check=False)
            if out.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("own redis-server did not start")

    def stop(self) -> None:
        """Shut down cleanly (SIGTERM: the AOF is complete), keeping the data."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


class OwnPostgres:
    """A throw-away PostgreSQL cluster (trust auth) in a directory of its own (run as the
    ``postgres`` user when the tests run as root: the server refuses root)."""

    def __init__(self) -> None:
        bin_dir = postgres_bin()
        if bin_dir is None:
            _missing("PostgreSQL server binaries (/usr/lib/postgresql/*/bin)")
        assert bin_dir is not None
        self.bin, self.port = bin_dir, free_port()
        self.root = Path(tempfile.mkdtemp(prefix="celeriac-outage-pg-"))
        self.data = self.root / "data"
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, tool: str, *args: object, check: bool = True) -> None:
        command = [str(self.bin / tool), *(str(a) for a in args)]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=check, capture_output=True, timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-l", self.root / "server.log", "-w", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                  "-c max_connections=40 -c autovacuum=off", "start")

    def stop(self) -> None:
        """Fast shutdown (connections are closed), keeping the data."""
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop", check=False)
        deadline = time.monotonic() + 30
        while _port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def kill(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def rabbit_server() -> Any:
    """A private RabbitMQ node (the reliability suite's, loaded by path): ``start()``,
    ``crash()`` (SIGKILL of its VM; durable queues survive), ``close()``."""
    if not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists():
        _missing("rabbitmq-server")
    path = Path(__file__).resolve().parents[2] / "bench" / "reliability" / "servers.py"
    spec = importlib.util.spec_from_file_location("_reliability_servers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RabbitServer()
