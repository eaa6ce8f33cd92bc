"""``celeriac db``: create, upgrade and inspect the PostgreSQL schema of an app.

``celeriac -A proj db migrate`` applies every missing migration to the schema of the
app's PostgreSQL broker and of its result store (once when both use the same
database and schema) and prints what it did; ``db status`` prints the recorded
schema version, the version this celeriac needs and the size of the queue table;
``db vacuum`` runs the maintenance pass now (expired results, VACUUM).
Registered by :mod:`celeriac.cli`; needs the ``postgres`` extra only when used.
"""

from __future__ import annotations

from typing import Any

import click


def _targets(app: Any) -> list[tuple[str, Any]]:
    """``(role, Settings)`` of the app's PostgreSQL broker and result store, deduplicated."""
    from ...brokers import scheme_of

    found: list[tuple[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    candidates = [("broker", app.broker_url, app._broker_options())]
    if app.backend_url:
        candidates.append(("result_backend", app.backend_url, app._backend_options()))
    for role, url, options in candidates:
        head = url.split("://", 1)[0].lower()
        if scheme_of(url) not in ("postgresql", "postgres") and not head.startswith(
                ("db+postgres",)):
            continue
        from .db import parse_url

        settings = parse_url(url, options, what=role)
        key = (settings.conninfo, settings.schema)
        if key not in seen:
            seen.add(key)
            found.append((role, settings))
    return found


@click.group("db")
def db_group() -> None:
    """Manage celeriac's tables in PostgreSQL."""


@db_group.command("migrate")
@click.pass_obj
def migrate_command(obj: Any) -> None:
    """Create or upgrade the celeriac schema in the app's PostgreSQL database."""
    targets = _targets(obj.app)
    if not targets:
        click.echo("Nothing to migrate: neither the broker nor the result store is "
                   "PostgreSQL (SQLite creates its tables on first use).")
        return
    import psycopg

    from .migrate import migrate
    from .sql import latest_version

    for role, settings in targets:
        with psycopg.connect(settings.conninfo, autocommit=True) as conn:
            applied = migrate(conn, settings.schema)
        where = f"{settings.safe_url} schema {settings.schema!r} ({role})"
        if applied:
            done = ", ".join(f"{v:04d}_{name}" for v, name in applied)
            click.echo(f"{where}: applied {done}; now at version {latest_version()}.")
        else:
            click.echo(f"{where}: already at version {latest_version()}.")


@db_group.command("status")
@click.pass_obj
def status_command(obj: Any) -> None:
    """Show the schema version and the size of the queue table."""
    import psycopg

    from .migrate import check_version
    from .sql import latest_version

    targets = _targets(obj.app)
    if not targets:
        click.echo("Neither the broker nor the result store is PostgreSQL.")
        return
    for role, settings in targets:
        with psycopg.connect(settings.conninfo, autocommit=True) as conn:
            found = check_version(conn, settings.schema)
            click.echo(f"{settings.safe_url} schema {settings.schema!r} ({role}): version "
                       f"{found if found is not None else 'none'} (this celeriac needs "
                       f"{latest_version()})")
            if found is None:
                continue
            for name in ("messages", "results", "dead_letters"):
                row = conn.execute(
                    "SELECT n_live_tup, n_dead_tup, pg_total_relation_size(relid) FROM "
                    "pg_stat_user_tables WHERE schemaname = %s AND relname = %s",
                    (settings.schema, name)).fetchone()
                if row:
                    click.echo(f"  {name}: {row[0]} live rows, {row[1]} dead, "
                               f"{row[2] / 1024:.0f} KiB")


@db_group.command("vacuum")
@click.pass_obj
def vacuum_command(obj: Any) -> None:
    """Delete expired results and VACUUM celeriac's tables now."""
    from .db import acquire, release

    for _, settings in _targets(obj.app):
        db = acquire(settings)
        try:
            db.ensure_schema()
            done = db.maintenance.run_once(force=True)
        finally:
            release(db)
        click.echo(f"{settings.safe_url} schema {settings.schema!r}: vacuumed "
                   f"{', '.join(done) or 'nothing (another process holds the lock)'}.")
