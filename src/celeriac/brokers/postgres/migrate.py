"""Creating and upgrading the celeriac schema, and reading its recorded version.

``<schema>.schema_version`` has one row per applied migration (version, name, time,
celeriac version); the schema's version is the highest. :func:`migrate` applies every
missing migration in one transaction holding ``pg_advisory_xact_lock`` on the schema
name, so concurrent callers (several workers starting at once, or ``db migrate`` run
twice) serialise and the second finds nothing to do.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ...exceptions import ImproperlyConfigured
from ...version import __version__
from . import sql

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS {schema}.schema_version (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    celeriac_version text NOT NULL
)"""


class SchemaError(ImproperlyConfigured):
    """The database's celeriac schema is missing, older or newer than this code."""


def check_version(conn: psycopg.Connection[Any], schema: str) -> int | None:
    """The schema's recorded version, or None when it has no celeriac tables."""
    row = conn.execute("SELECT to_regclass(%s)", (f"{schema}.schema_version",)).fetchone()
    if row is None or row[0] is None:
        return None
    found = conn.execute(f"SELECT max(version) FROM {schema}.schema_version").fetchone()
    return None if found is None or found[0] is None else int(found[0])


def migrate(conn: psycopg.Connection[Any], schema: str) -> list[tuple[int, str]]:
    """Apply the missing migrations; return ``(version, name)`` of those applied."""
    sql.check_schema(schema)
    applied: list[tuple[int, str]] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"celeriac:{schema}",))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        conn.execute(_VERSION_TABLE.replace("{schema}", schema))
        current = check_version(conn, schema) or 0
        latest = sql.latest_version()
        if current > latest:
            raise SchemaError(f"schema {schema!r} is at celeriac schema version {current}, "
                              f"newer than this celeriac knows ({latest})")
        for version, name, text in sql.migrations():
            if version <= current:
                continue
            conn.execute(text.replace("{schema}", schema).encode("utf-8"))
            conn.execute(f"INSERT INTO {schema}.schema_version (version, name, "
                         "celeriac_version) VALUES (%s, %s, %s)", (version, name, __version__))
            applied.append((version, name))
    return applied
