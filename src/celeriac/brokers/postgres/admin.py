"""Schema administration for ``celeriac db``: migrate, status and vacuum one PostgreSQL URL.

:data:`ADMIN` is what the PostgreSQL engine hands the command line through the
scheme table (``Engine.admin``, :mod:`celeriac.brokers.registry`), so the CLI
needs psycopg only when a URL it administers is PostgreSQL. Each operation
connects directly (not through the pools of brokers and stores) and returns
the lines to print.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

from .db import acquire, parse_url, release
from .migrate import check_version, migrate
from .sql import latest_version

#: celeriac's tables whose size ``db status`` reports
_SIZED = ("messages", "results", "dead_letters")
_SIZE = ("SELECT n_live_tup, n_dead_tup, pg_total_relation_size(relid) FROM "
         "pg_stat_user_tables WHERE schemaname = %s AND relname = %s")


class PostgresAdmin:
    """``celeriac db`` operations on the schema a PostgreSQL URL names."""

    def identity(self, url: str, options: Mapping[str, Any], setting: str) -> tuple[str, str]:
        """``(key, label)``: URLs with the same key are the same schema (done once)."""
        settings = parse_url(url, options, what=setting)
        return (f"{settings.conninfo}\x1f{settings.schema}",
                f"{settings.safe_url} schema {settings.schema!r}")

    def migrate(self, url: str, options: Mapping[str, Any], setting: str) -> list[str]:
        """Apply every missing migration."""
        settings = parse_url(url, options, what=setting)
        with psycopg.connect(settings.conninfo, autocommit=True) as conn:
            applied = migrate(conn, settings.schema)
        if applied:
            done = ", ".join(f"{v:04d}_{name}" for v, name in applied)
            return [f"applied {done}; now at version {latest_version()}."]
        return [f"already at version {latest_version()}."]

    def status(self, url: str, options: Mapping[str, Any], setting: str) -> list[str]:
        """The recorded schema version, the one this celeriac needs, and table sizes."""
        settings = parse_url(url, options, what=setting)
        with psycopg.connect(settings.conninfo, autocommit=True) as conn:
            found = check_version(conn, settings.schema)
            lines = [f"version {found if found is not None else 'none'} (this celeriac "
                     f"needs {latest_version()})"]
            if found is None:
                return lines
            for name in _SIZED:
                row = conn.execute(_SIZE, (settings.schema, name)).fetchone()
                if row:
                    lines.append(f"  {name}: {row[0]} live rows, {row[1]} dead, "
                                 f"{row[2] / 1024:.0f} KiB")
        return lines

    def vacuum(self, url: str, options: Mapping[str, Any], setting: str) -> list[str]:
        """Delete expired results and VACUUM celeriac's tables now."""
        db = acquire(parse_url(url, options, what=setting))
        try:
            db.ensure_schema()
            done = db.maintenance.run_once(force=True)
        finally:
            release(db)
        return [f"vacuumed {', '.join(done) or 'nothing (another process holds the lock)'}."]


ADMIN = PostgresAdmin()
