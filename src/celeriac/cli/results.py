"""``celeriac -A proj results cleanup``: delete expired results now (registered by the CLI).

Stores that expire entries themselves (Redis, caches) have nothing to do; the
SQLite and Django database stores delete rows past their expiry. Beat runs the
same cleanup daily as ``celery.backend_cleanup`` for the Django database store.
"""

from __future__ import annotations

from typing import Any

import click

from ..brokers.base import redact


@click.group("results")
def results_group() -> None:
    """Result store maintenance."""


@results_group.command("cleanup")
@click.pass_obj
def cleanup_command(obj: Any) -> None:
    """Delete expired task, group and chord results from the result store."""
    app = obj.app
    app.finalize()
    store = app.backend
    if store is None:
        raise click.ClickException("results are disabled (no result_backend)")
    removed = store.cleanup()
    click.echo(f"removed {removed} expired result row(s) from {redact(store.url)}")
