"""Test helpers for the Django integration: the test project as real processes, and in-process.

* :class:`Site`: the project in ``tests/django_project`` with its own database
  (a copy of a migrated SQLite template, or a PostgreSQL database created from a
  migrated template database, dropped afterwards) and its own SQLite broker file.
  ``site.python(code)`` runs code in a fresh process with Django set up;
  ``site.proc(...)`` starts ``celeriac``/``manage.py`` processes (workers,
  beats, relays) whose output goes to a log file; ``site.query(sql)`` reads the
  database directly.
* :func:`setup_inprocess`: Django set up in the test process itself (admin via
  the test client, the result store contract), on a session SQLite file and,
  when PostgreSQL is up, an extra alias ``pg``.

Django is an optional extra: :func:`require_django` skips without it, and fails
under ``CI=true``. PostgreSQL tests use ``require_service`` (skip locally, fail in CI).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from celeryproc import wait_until

PROJECT = Path(__file__).resolve().parents[1] / "django_project"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_ADMIN_URL = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"
#: environment variables that would point the project elsewhere
OVERRIDING_ENV = ("CELERIAC_BROKER_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND",
                  "CELERIAC_RESULT_BACKEND", "CELERIAC_APP", "DJANGO_SETTINGS_MODULE",
                  "CELERIAC_TEST_DATABASE", "CELERIAC_TEST_PG_DATABASE", "CELERIAC_TEST_OUTBOX")


def require_django() -> None:
    """Skip without Django (``pip install 'celeriac[django]'``); fail under CI=true."""
    if importlib.util.find_spec("django") is not None:
        return
    message = "Django is not installed (pip install 'celeriac[django]')"
    if IN_CI:
        pytest.fail(message + " (CI=true: test dependencies are required)")
    pytest.skip(message)


def require_postgres() -> None:
    """Skip when PostgreSQL (or psycopg) is missing; fail instead under CI=true."""
    import socket

    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=0.5):
            pass
    except OSError:
        message = f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}"
        if IN_CI:
            pytest.fail(message + " (CI=true: services are required)")
        pytest.skip(message)
    if importlib.util.find_spec("psycopg") is None:
        message = "psycopg is not installed (pip install 'celeriac[postgres]')"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


# -- PostgreSQL databases ------------------------------------------------------------------
def pg_execute(sql: str, dbname: str = "postgres") -> None:
    import psycopg

    with psycopg.connect(f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{dbname}",
                         autocommit=True) as conn:
        conn.execute(sql)


def pg_create(name: str, template: str | None = None) -> str:
    pg_execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}"


def pg_drop(name: str) -> None:
    pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the project as processes ------------------------------------------------------------
def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in OVERRIDING_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    env["DJANGO_SETTINGS_MODULE"] = "proj.settings"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def migrate(database_url: str) -> None:
    done = subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=PROJECT,
                          env=base_env(CELERIAC_TEST_DATABASE=database_url),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


class Templates:
    """Migrated template databases, made once per session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._sqlite: Path | None = None
        self._pg: str | None = None

    def sqlite(self) -> Path:
        if self._sqlite is None:
            path = self.root / "template.sqlite3"
            migrate(str(path))
            self._sqlite = path
        return self._sqlite

    def postgres(self) -> str:
        if self._pg is None:
            name = f"celeriac_tpl_{uuid.uuid4().hex[:10]}"
            migrate(pg_create(name))
            self._pg = name
        return self._pg

    def close(self) -> None:
        if self._pg is not None:
            pg_drop(self._pg)


class Proc:
    """A ``celeriac`` or ``manage.py`` subprocess of a site, output in a log file."""

    def __init__(self, site: Site, argv: list[str], name: str, env: dict[str, str]) -> None:
        self.site, self.argv, self.name = site, argv, name
        self.log_path = site.path / f"{name}-{time.monotonic_ns()}.log"
        with open(self.log_path, "wb") as out:
            self.popen = subprocess.Popen(argv, cwd=PROJECT, env=env, stdout=out,
                                          stderr=subprocess.STDOUT)

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, text: str, timeout: float = 60.0, count: int = 1) -> None:
        def seen() -> bool:
            if self.popen.poll() is not None and self.log.count(text) < count:
                raise AssertionError(f"{self.name} exited ({self.popen.returncode}):\n"
                                     f"{self.log}")
            return self.log.count(text) >= count

        wait_until(seen, timeout, what=f"{text!r} in the {self.name} log:\n{self.log}")

    def stop(self, timeout: float = 45.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.popen.returncode or 0)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


class Site:
    """One instance of the test project: a database, a broker file, its processes."""

    def __init__(self, path: Path, backend: str, templates: Templates) -> None:
        self.path, self.backend = path, backend
        self.broker_url = f"sqlite:///{path / 'broker.sqlite3'}"
        self._pg_name: str | None = None
        if backend == "postgresql":
            self._pg_name = f"celeriac_t_{uuid.uuid4().hex[:12]}"
            self.database_url = pg_create(self._pg_name, templates.postgres())
        else:
            db = path / "site.sqlite3"
            shutil.copy(templates.sqlite(), db)
            self.database_url = str(db)
        self.procs: list[Proc] = []
        self.extra_env: dict[str, str] = {}

    def env(self, **extra: str) -> dict[str, str]:
        return base_env(CELERIAC_TEST_DATABASE=self.database_url,
                        CELERIAC_BROKER_URL=self.broker_url, **{**self.extra_env, **extra})

    def python(self, code: str, timeout: float = 120.0, check: bool = True,
               **env: str) -> subprocess.CompletedProcess[str]:
        """Run ``code`` in a new process with Django set up; stdout/stderr captured."""
        script = "import django\ndjango.setup()\n" + textwrap.dedent(code)
        done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT, env=self.env(**env),
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check:
            assert done.returncode == 0, done.stdout + done.stderr
        return done

    def result(self, code: str, **env: str) -> Any:
        """Run ``code`` that prints one JSON line last; return it decoded."""
        out = self.python(code, **env).stdout.strip().splitlines()
        return json.loads(out[-1])

    def manage(self, *args: str, timeout: float = 120.0,
               **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "manage.py", *args], cwd=PROJECT,
                              env=self.env(**env), capture_output=True, text=True,
                              timeout=timeout, check=False)

    def cli(self, *args: str, timeout: float = 120.0,
            **env: str) -> subprocess.CompletedProcess[str]:
        """``celeriac -A proj ARGS`` run to completion."""
        return subprocess.run([sys.executable, "-m", "celeriac", "-A", "proj", *args],
                              cwd=PROJECT, env=self.env(**env), capture_output=True, text=True,
                              timeout=timeout, check=False)

    def proc(self, *argv: str, name: str = "proc", **env: str) -> Proc:
        proc = Proc(self, [sys.executable, *argv], name, self.env(**env))
        self.procs.append(proc)
        return proc

    def worker(self, *args: str, name: str = "worker", **env: str) -> Proc:
        if "-l" not in args and "--loglevel" not in args:
            args = (*args, "-l", "INFO")
        proc = self.proc("-m", "celeriac", "-A", "proj", "worker", *args, name=name, **env)
        proc.wait_for("ready.")
        return proc

    @contextmanager
    def running_worker(self, *args: str, **env: str) -> Iterator[Proc]:
        proc = self.worker(*args, **env)
        try:
            yield proc
        finally:
            proc.stop()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` (``%s`` placeholders) run directly on the site's database."""
        if self.backend == "postgresql":
            import psycopg

            with psycopg.connect(self.database_url, autocommit=True) as conn:
                return list(conn.execute(sql, params).fetchall())
        with sqlite3.connect(self.database_url, timeout=30) as conn:
            return list(conn.execute(sql.replace("%s", "?"), params).fetchall())

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()
        if self._pg_name is not None:
            pg_drop(self._pg_name)


# -- Django in this process ---------------------------------------------------------------
class InProcess:
    """What :func:`setup_inprocess` set up: the project's app and database aliases."""

    def __init__(self, app: Any, aliases: list[str]) -> None:
        self.app, self.aliases = app, aliases


def setup_inprocess(root: Path, with_postgres: bool) -> tuple[InProcess, Callable[[], None]]:
    """Set Django up here once (settings of the test project); return it and a teardown."""
    import django
    from celeriac.app import state as _state

    previous = _state.get_current_app() if _state.all_apps() else None
    pg_name = None
    saved = {k: os.environ.get(k) for k in OVERRIDING_ENV}
    for key in OVERRIDING_ENV:
        os.environ.pop(key, None)
    os.environ["CELERIAC_TEST_DATABASE"] = str(root / "inprocess.sqlite3")
    if with_postgres:
        pg_name = f"celeriac_inproc_{uuid.uuid4().hex[:10]}"
        os.environ["CELERIAC_TEST_PG_DATABASE"] = pg_create(pg_name)
    os.environ["DJANGO_SETTINGS_MODULE"] = "proj.settings"
    if str(PROJECT) not in sys.path:
        sys.path.insert(0, str(PROJECT))
    try:
        django.setup()
        from django.core.management import call_command
        from django.db import connections

        aliases = list(connections)
        for alias in aliases:
            call_command("migrate", database=alias, verbosity=0)
        from proj.celery import app

        app.conf.broker_url = f"sqlite:///{root / 'inprocess-broker.sqlite3'}"
        app.finalize()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if previous is not None:
        _state.set_current_app(previous)

    def teardown() -> None:
        from django.db import connections

        for conn in connections.all():
            conn.close()
        if pg_name is not None:
            pg_drop(pg_name)

    return InProcess(app, aliases), teardown
