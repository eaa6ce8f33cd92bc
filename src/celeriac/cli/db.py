"""``celeriac db migrate|status|vacuum``: the schema of engines that version theirs (PostgreSQL).

``db migrate`` applies every missing migration to the schema of the app's broker,
result store and ``beat_schedule_store`` (once per database and schema) and
prints what it did; ``db status`` prints the recorded schema version, the
version this celeriac needs and the size of celeriac's tables; ``db vacuum``
runs the maintenance pass now (expired results, VACUUM). Which engines have a
schema to manage is the scheme table's business (``Engine.admin`` in
:mod:`celeriac.brokers.registry`); SQLite creates its tables on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..app.base import Celery
from ..brokers.registry import BEAT, BROKER, RESULTS, SchemaAdmin, engine_for, serves

#: (``db`` operation on one URL) -> lines to print
Operation = Callable[[SchemaAdmin, str, dict[str, Any], str], list[str]]


def _targets(app: Celery) -> list[tuple[str, SchemaAdmin, str, dict[str, Any], str]]:
    """``(label, admin, url, options, setting)`` per distinct schema the app uses."""
    conf = app.conf
    candidates = [("broker", BROKER, app.broker_url, app._broker_options())]
    if app.backend_url:
        candidates.append(("result_backend", RESULTS, app.backend_url, app._backend_options()))
    if conf.get("beat_schedule_store"):
        candidates.append(("beat_schedule_store", BEAT, str(conf.beat_schedule_store),
                           dict(conf.get("broker_transport_options") or {})))
    found: list[tuple[str, SchemaAdmin, str, dict[str, Any], str]] = []
    seen: set[str] = set()
    for setting, role, url, options in candidates:
        if not serves(url, role):
            continue
        admin = engine_for(url, role).admin
        if admin is None:
            continue
        key, label = admin.identity(url, options, setting)
        if key not in seen:
            seen.add(key)
            found.append((f"{label} ({setting})", admin, url, options, setting))
    return found


def _each(app: Celery, operation: Operation, nothing: str) -> None:
    targets = _targets(app)
    if not targets:
        click.echo(nothing)
        return
    for label, admin, url, options, setting in targets:
        first, *rest = operation(admin, url, options, setting)
        click.echo(f"{label}: {first}")
        for line in rest:
            click.echo(line)


@click.group("db")
def db_group() -> None:
    """Manage celeriac's tables in the app's database (PostgreSQL)."""


@db_group.command("migrate")
@click.pass_obj
def migrate_command(obj: Any) -> None:
    """Create or upgrade the celeriac schema in the app's PostgreSQL database."""
    _each(obj.app, lambda admin, *args: admin.migrate(*args),
          "Nothing to migrate: neither the broker nor the result store is PostgreSQL "
          "(SQLite creates its tables on first use).")


@db_group.command("status")
@click.pass_obj
def status_command(obj: Any) -> None:
    """Show the schema version and the size of celeriac's tables."""
    _each(obj.app, lambda admin, *args: admin.status(*args),
          "Neither the broker nor the result store is PostgreSQL.")


@db_group.command("vacuum")
@click.pass_obj
def vacuum_command(obj: Any) -> None:
    """Delete expired results and VACUUM celeriac's tables now."""
    _each(obj.app, lambda admin, *args: admin.vacuum(*args),
          "Neither the broker nor the result store is PostgreSQL.")
