"""CLI: ``celeriac -A proj outbox relay`` (and ``outbox status``).

The relay publishes committed outbox rows (see :mod:`.outbox`); workers run one
by default, so this command is for deployments that turn
``worker_outbox_relay`` off or want a dedicated relay process. ``--once``
publishes what is waiting now and exits.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import click


def _setup(obj: Any) -> Any:
    app = obj.app
    app.finalize()  # the Django fix-up runs django.setup() here
    try:
        from django.apps import apps
    except ImportError:
        raise click.ClickException("outbox: Django is not installed "
                                   "(pip install 'celeriac[django]')") from None
    if not apps.ready:
        raise click.ClickException("outbox: Django is not set up: set DJANGO_SETTINGS_MODULE")
    if not apps.is_installed("celeriac.contrib.django"):
        raise click.ClickException("outbox: add 'celeriac.contrib.django' to INSTALLED_APPS "
                                   "(and run migrate)")
    return app


@click.group("outbox")
def outbox_group() -> None:
    """The Django transactional outbox (task_outbox)."""


@outbox_group.command("relay")
@click.option("--once", is_flag=True, help="Publish what is waiting now, then exit.")
@click.option("--interval", type=float, default=0.5, show_default=True,
              help="Seconds between passes.")
@click.option("--database", help="Database alias (default: task_outbox_database).")
@click.pass_obj
def relay_command(obj: Any, once: bool, interval: float, database: str | None) -> None:
    """Move committed outbox messages to the broker until stopped (SIGTERM/SIGINT)."""
    from .outbox import Relay

    relay = Relay(_setup(obj), database)
    if once:
        click.echo(f"outbox: published {relay.run_once()} message(s)")
        return
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    click.echo(f"outbox: relay running on database {relay.alias!r}")
    relay.run(stop, interval)
    click.echo(f"outbox: relay stopped after publishing {relay.sent} message(s)")


@outbox_group.command("status")
@click.option("--database", help="Database alias (default: task_outbox_database).")
@click.pass_obj
def status_command(obj: Any, database: str | None) -> None:
    """Count waiting and sent outbox messages."""
    from .outbox import Relay

    relay = Relay(_setup(obj), database)
    rows = relay._rows()
    waiting = rows.filter(sent_at__isnull=True).count()
    click.echo(f"waiting: {waiting}  sent (kept for de-duplication): "
               f"{rows.filter(sent_at__isnull=False).count()}")
