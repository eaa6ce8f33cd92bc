"""The test Pyramid site (tests/pyramid_project) written out with its ini file.

:class:`Site` writes ``development.ini`` (seed 001's ``[celery]`` and
``[celerybeat:...]`` sections, SQLite for the data and for the broker, logging
sections) into a temporary directory, loads the WSGI application in this
process for WebTest, reads the site's tables, and runs ``celeriac ... --ini``
commands as real subprocesses.
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PROJECT = str(Path(__file__).resolve().parent.parent / "pyramid_project")
NEEDED = ("pyramid", "pyramid_tm", "transaction", "zope.sqlalchemy", "sqlalchemy", "webtest")

INI = """\
[app:main]
use = call:trees:main
sqlalchemy.url = {data_url}
app.url = https://trees.example.com
tm.manager_hook = pyramid_tm.explicit_manager

[celery]
BROKER_URL = {broker_url}
CELERY_RESULT_BACKEND = {broker_url}
CELERY_IMPORTS =
    trees.tasks
CELERYD_CONCURRENCY = 2
CELERY_TASK_SERIALIZER = json
beat_max_loop_interval = 1
{extra_celery}
[celerybeat:update_conversion_rates]
task = update_conversion_rates
type = timedelta
schedule = {{"seconds": 1}}

[pshell]
setup = celeriac.contrib.pyramid.shell.setup

[loggers]
keys = root, trees

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = INFO
handlers = console

[logger_trees]
level = DEBUG
handlers =
qualname = trees

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(asctime)s %(levelname)-5.5s [%(name)s] INI-LOGGING %(message)s
"""


def require_pyramid() -> None:
    """Skip without the Pyramid extra (``pip install 'celeriac[pyramid]'``); fail under CI."""
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if not missing:
        return
    message = f"{', '.join(missing)} not installed (pip install 'celeriac[pyramid]' webtest)"
    if IN_CI:
        pytest.fail(message + " (CI=true: test dependencies are required)")
    pytest.skip(message)


class Site:
    """One copy of the site: its ini file, database and broker in ``path``."""

    def __init__(self, path: Path, extra_celery: str = "", data_url: str | None = None,
                 broker_url: str | None = None) -> None:
        require_pyramid()
        if PROJECT not in sys.path:
            sys.path.insert(0, PROJECT)
        self.path = path
        self.ini = path / "development.ini"
        self.data_url = data_url
        self.ini.write_text(INI.format(
            extra_celery=textwrap.dedent(extra_celery),
            data_url=data_url.replace("%", "%%") if data_url
            else "sqlite:///%(here)s/trees.sqlite3",
            broker_url=broker_url.replace("%", "%%") if broker_url
            else "sqlite:///%(here)s/broker.sqlite3"))
        self.db = path / "trees.sqlite3"

    def wsgi(self) -> Any:
        """The site's WSGI application, loaded here (its main() configures celery_app)."""
        from pyramid.paster import get_app

        return get_app(str(self.ini))

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.data_url:
            return self._pg_rows(sql)
        if not self.db.exists():
            return []
        conn = sqlite3.connect(self.db, timeout=30)
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()

    def _pg_rows(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg
        from sqlalchemy.engine import make_url

        url = make_url(str(self.data_url))
        with psycopg.connect(host=url.host, port=url.port, user=url.username,
                             dbname=url.database, autocommit=True,
                             **dict(url.query)) as conn:  # type: ignore[arg-type]
            try:
                return conn.execute(sql).fetchall()  # type: ignore[arg-type]
            except psycopg.errors.UndefinedTable:
                return []

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("CELERIAC_APP", "CELERY_BROKER_URL", "CELERIAC_BROKER_URL")}
        env["PYTHONPATH"] = os.pathsep.join([PROJECT, env.get("PYTHONPATH", "")])
        env["CELERIAC_SQLITE_PATH"] = str(self.path / "default.sqlite3")
        return env

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "celeriac", *args]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), cwd=self.path, env=self.env(),
                              capture_output=True, text=True, timeout=timeout)

    def pshell(self, commands: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Pyramid's ``pshell development.ini`` (the plain Python shell), fed ``commands``."""
        return subprocess.run([sys.executable, "-m", "pyramid.scripts.pshell", "-p", "python",
                               str(self.ini)], input=commands, cwd=self.path, env=self.env(),
                              capture_output=True, text=True, timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log_path = self.path / f"{args[0]}-{len(list(self.path.iterdir()))}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(self.command(*args), cwd=self.path, env=self.env(),
                                    stdout=log, stderr=subprocess.STDOUT)
        proc.log_path = log_path  # type: ignore[attr-defined]
        return proc


def stop(proc: subprocess.Popen[bytes]) -> str:
    """SIGTERM, wait (SIGKILL after 45 s); the process's log."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]
