"""Acceptance-test helper: ``celeriac dashboard`` as a subprocess, spoken to over HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

from workerproc import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DashboardProcess:
    """``celeriac -A proj dashboard`` in a subprocess, spoken to over HTTP."""

    def __init__(self, proj: Any, history: str, *extra: str) -> None:
        self.proj = proj
        self.port = free_port()
        self.log_path = proj.path / f"dashboard-{self.port}.log"
        self.args = ["-A", proj.module, "dashboard", "--port", str(self.port), "--history",
                     history, *extra]
        self.proc: subprocess.Popen[bytes] | None = None
        self.auth: str | None = None

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> DashboardProcess:
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "celeriac", *self.args],
                                         cwd=self.proj.path, env=self.proj.env(), stdout=out,
                                         stderr=subprocess.STDOUT)

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log
            try:
                return self.request("GET", "/healthz")[0] == 200
            except OSError:
                return False

        wait_until(up, 60, 0.1, "the dashboard to answer")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                     method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.auth:
            req.add_header("Authorization", f"Basic {self.auth}")
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")
