"""Where the history lives: SQLite (default) or PostgreSQL, behind one small interface.

:func:`open_database` takes ``dashboard_history_url``: ``sqlite:///path``
(a relative path is relative to the working directory; default
``sqlite:///celeriac-dashboard.sqlite3``) or ``postgresql://...`` (psycopg 3,
the ``postgres`` extra; ``?schema=NAME`` puts the tables in that schema,
created when missing, default ``public``). Both speak the same SQL: the
store writes ``?`` placeholders and the PostgreSQL engine turns them into
``%s``. SQLite runs in WAL mode with one connection per thread, so page
reads never wait for the event writer. Integrations add schemes through
:func:`celeriac.hooks.register_history_database` (``django-db``: the tables
in the Django project's database, :mod:`celeriac.contrib.django.history`).
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ... import hooks
from ...exceptions import ImproperlyConfigured

T = TypeVar("T")
DEFAULT_URL = "sqlite:///celeriac-dashboard.sqlite3"


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Database(Protocol):
    """A database the history store runs its SQL on."""

    kind: str
    url: str

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
    def write(self, work: Callable[[Cursor], T]) -> T: ...
    def explain(self, sql: str, params: Sequence[Any] = ()) -> str: ...
    def close(self) -> None: ...


class SQLiteDatabase:
    """One SQLite file, WAL mode, a connection per thread."""

    kind = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self._conn().execute(sql, tuple(params)).fetchall())

    def write(self, work: Callable[[Cursor], T]) -> T:
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn.cursor())
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    def explain(self, sql: str, params: Sequence[Any] = ()) -> str:
        """The query plan, one step a line, indented two spaces per level."""
        return sqlite_plan(self._conn().execute("EXPLAIN QUERY PLAN " + sql,
                                                tuple(params)).fetchall())

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()


def sqlite_plan(rows: Sequence[Sequence[Any]]) -> str:
    """SQLite's ``EXPLAIN QUERY PLAN`` rows, one step a line, indented two spaces per
    level."""
    depth: dict[int, int] = {0: -1}
    lines = []
    for node, parent, _, detail in rows:
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + str(detail))
    return "\n".join(lines)


class PgCursor:
    """A psycopg cursor taking ``?`` placeholders."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._cursor.execute(pg_sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        return self._cursor.executemany(pg_sql(sql), [tuple(r) for r in rows])

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall())


def pg_sql(sql: str) -> str:
    """The store's SQL for psycopg: ``%s`` placeholders and PostgreSQL's types."""
    sql = sql.replace("%", "%%").replace("?", "%s")
    sql = re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)
    return sql.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")


class PostgresDatabase:
    """A PostgreSQL database through a psycopg pool."""

    kind = "postgres"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
            import psycopg_pool
        except ImportError:  # pragma: no cover - depends on the install
            raise ImproperlyConfigured(
                "dashboard_history_url names PostgreSQL: install celeriac[postgres]") from None
        parts = urlsplit(url.replace("postgresql+psycopg://", "postgresql://"))
        query = dict(parse_qsl(parts.query))
        self.schema = query.pop("schema", "public")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.schema):
            raise ImproperlyConfigured(f"dashboard_history_url: bad schema {self.schema!r}")
        conninfo = urlunsplit(parts._replace(query=urlencode(query)))
        self.url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        schema = self.schema

        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')

        def configure(conn: Any) -> None:
            conn.autocommit = True
            conn.execute(f'SET search_path TO "{schema}"')

        self._pool = psycopg_pool.ConnectionPool(conninfo, min_size=1, max_size=8,
                                                 configure=configure, open=True)

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        with self._pool.connection() as conn:
            yield conn

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            return list(conn.execute(pg_sql(sql), tuple(params)).fetchall())

    def write(self, work: Callable[[Cursor], T]) -> T:
        with self._connection() as conn, conn.transaction(), conn.cursor() as cursor:
            return work(PgCursor(cursor))

    def explain(self, sql: str, params: Sequence[Any] = ()) -> str:
        rows = self.read("EXPLAIN " + sql, params)
        return "\n".join(str(r[0]) for r in rows)

    def close(self) -> None:
        self._pool.close()


def open_database(url: str | None) -> Database:
    """The database of ``dashboard_history_url`` (see the module docstring)."""
    url = url or DEFAULT_URL
    scheme = url.split("://", 1)[0].lower()
    opener = hooks.history_database_opener(scheme)
    if opener is not None:
        database: Database = opener(url)
        return database
    if scheme == "sqlite":
        path = url.split("://", 1)[1]
        path = path[1:] if path.startswith("/") else path
        if not path or path == ":memory:":
            raise ImproperlyConfigured("dashboard_history_url: SQLite needs a file path "
                                       "(sqlite:///history.sqlite3)")
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise ImproperlyConfigured(
                f"dashboard_history_url: directory {directory} does not exist")
        return SQLiteDatabase(path)
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        return PostgresDatabase(url)
    raise ImproperlyConfigured(
        f"dashboard_history_url: unsupported URL {url.split('://', 1)[0]}:// "
        f"(use sqlite:///path, postgresql://... or django-db)")
