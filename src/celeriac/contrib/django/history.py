"""The dashboard history in the Django project's database: ``dashboard_history_url = 'django-db'``.

:func:`open_history` serves ``django-db`` (the ``default`` alias) and
``django-db://ALIAS`` for :func:`celeriac.dashboard.history.open_database`
(registered through :func:`celeriac.hooks.register_history_database`). The
history store runs its own SQL, the same as on its SQLite and PostgreSQL
engines, on the connection Django opened for the alias (one per thread, as
Django keeps them), so the dashboard needs no second database and takes
its credentials from ``DATABASES``. Its tables (``dashboard_tasks``,
``dashboard_attempts``, ``dashboard_audit``, ``dashboard_throughput``,
``dashboard_meta``) are created by the dashboard at start, like on the other
engines; they are not Django models (``migrate`` and ``flush`` leave them
alone). Results still come from the result store (``result_backend =
'django-db'`` reads django-celery-results' table), as with every history engine.

Only Django's ``sqlite`` and ``postgresql`` backends speak the store's SQL; any
other stops the dashboard at start-up naming the setting. Calls made on a
running event loop (the dashboard's pages) run on a helper thread
(:func:`.db.off_loop`), because Django refuses database calls there. A write
on SQLite is one ``BEGIN IMMEDIATE`` transaction on the sqlite3 connection (no
lock upgrade that could fail at once under concurrent writers); on PostgreSQL
one ``transaction.atomic`` block through Django's cursor (psycopg 3 or
psycopg2) whose reads lock their rows. Connections stay open for the life of the dashboard
and are reopened after an error.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from celeriac.dashboard.history.engines import Cursor, PgCursor, pg_sql, sqlite_plan
from celeriac.exceptions import ImproperlyConfigured

from .db import off_loop
from .fixup import django_setup

T = TypeVar("T")
SCHEME = "django-db"
VENDORS = {"sqlite": "sqlite", "postgresql": "postgres"}


def alias_of(url: str) -> str:
    """``django-db`` -> ``default``; ``django-db://reports`` -> ``reports``."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    return rest.strip("/") or "default"


def _configure(url: str) -> str:
    """Django set up for the alias of ``url``; returns the alias (else a clear error)."""
    try:
        import django  # noqa: F401
    except ImportError:
        raise ImproperlyConfigured(
            f"dashboard_history_url = {url!r} needs Django: pip install "
            f"'celeriac[django]'") from None
    from django.conf import settings

    if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        raise ImproperlyConfigured(
            f"dashboard_history_url = {url!r} keeps the history in the Django project's "
            f"database, but Django is not configured: set DJANGO_SETTINGS_MODULE to the "
            f"project's settings (or use sqlite:///path or postgresql://...)")
    django_setup()
    from django.db import connections

    alias = alias_of(url)
    if alias not in connections.settings:
        raise ImproperlyConfigured(
            f"dashboard_history_url = {url!r}: DATABASES has no alias {alias!r} "
            f"(it has {', '.join(sorted(connections.settings))})")
    return alias


class DjangoDatabase:
    """The history store's :class:`~celeriac.dashboard.history.engines.Database` on a
    Django database alias."""

    def __init__(self, url: str) -> None:
        self.alias = _configure(url)
        self.url = url
        vendor = self._django().vendor
        if vendor not in VENDORS:
            raise ImproperlyConfigured(
                f"dashboard_history_url = {url!r}: the history needs SQLite or PostgreSQL; "
                f"DATABASES[{self.alias!r}] is {vendor} (use sqlite:///path or "
                f"postgresql://... for the history)")
        self.kind = VENDORS[vendor]
        self._write_lock = threading.Lock()

    def _django(self) -> Any:
        from django.db import connections

        return connections[self.alias]

    def _ready(self) -> Any:
        """This thread's Django connection for the alias; one an error left unusable is
        closed first (Django reopens it on its next use)."""
        conn = self._django()
        if conn.connection is not None and conn.errors_occurred and not conn.in_atomic_block:
            if not conn.is_usable():
                conn.close()
            conn.errors_occurred = False
        return conn

    def _on_sqlite(self, call: Callable[[Any], T]) -> T:
        """``call(the sqlite3 connection)``, marking the connection after a database error."""
        conn = self._ready()
        conn.ensure_connection()
        try:
            return call(conn.connection)
        except conn.Database.Error:
            conn.errors_occurred = True
            raise

    @off_loop
    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            return self._on_sqlite(lambda raw: list(raw.execute(sql, tuple(params)).fetchall()))
        # Django's cursor (psycopg 3 or psycopg2), which marks the connection on errors
        with self._ready().cursor() as cursor:
            cursor.execute(pg_sql(sql), tuple(params))
            return [tuple(row) for row in cursor.fetchall()]

    @off_loop
    def write(self, work: Callable[[Cursor], T]) -> T:
        if self._django().in_atomic_block:
            raise RuntimeError("the dashboard history cannot write inside a Django "
                               "transaction of the same thread")
        if self.kind == "sqlite":
            def sqlite_work(raw: Any) -> T:
                with self._write_lock:
                    raw.execute("BEGIN IMMEDIATE")
                    try:
                        result = work(raw.cursor())
                    except BaseException:
                        raw.execute("ROLLBACK")
                        raise
                    raw.execute("COMMIT")
                    return result

            return self._on_sqlite(sqlite_work)
        from django.db import transaction

        conn = self._ready()
        with transaction.atomic(using=self.alias), conn.cursor() as cursor:
            return work(PgCursor(cursor))

    def explain(self, sql: str, params: Sequence[Any] = ()) -> str:
        if self.kind == "sqlite":
            return sqlite_plan(self.read("EXPLAIN QUERY PLAN " + sql, params))
        return "\n".join(str(row[0]) for row in self.read("EXPLAIN " + sql, params))

    def close(self) -> None:
        """Close this thread's connection (Django's other threads close theirs)."""
        self._django().close()


def open_history(url: str) -> DjangoDatabase:
    """The opener registered for ``django-db`` URLs."""
    return DjangoDatabase(url)
