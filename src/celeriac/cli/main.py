"""The ``celeriac`` command group: global options and every subcommand, registered here.

Global options mirror Celery's (``-A/--app``, ``-b/--broker``,
``--result-backend``, ``--loader``, ``--config``, ``--workdir``, ``-C/--no-color``,
``-q/--quiet``, ``--skip-checks``; see :func:`.base.top_level_context`). Each command
group lives in its own module: :mod:`.tasks` (call, result, purge), :mod:`.worker`,
:mod:`.beat` (beat, schedule), :mod:`.admin` (deadletters, status), :mod:`.results`
(results cleanup), :mod:`.db` (the PostgreSQL schema: migrate, status, vacuum),
:mod:`.dashboard` (the web dashboard), :mod:`.control` (inspect, control),
:mod:`.events` (events), :mod:`.multi` (multi), :mod:`.exporter` (Prometheus metrics),
:mod:`.shell` (shell, report), :mod:`.migrate` (migrate), :mod:`.topology` (list
bindings, graph), :mod:`.upgrade` (upgrade settings), :mod:`.logtool` (logtool),
:mod:`.amqp` (amqp). Every command and option of Celery's ``celery`` exists here
(``tests/unit/test_cli_parity.py``).
Installed packages add commands through the entry-point
group ``celeriac.commands`` (Celery's ``celery.commands``); celeriac's Django
integration adds ``outbox`` that way, so the CLI never imports it.
"""

from __future__ import annotations

import importlib.metadata

import click

from ..app.base import Celery
from .admin import deadletters, status
from .amqp import amqp
from .base import CLIContext, ErrorHandlingGroup, top_level_context
from .beat import beat_command, schedule_group
from .control import control, inspect
from .dashboard import dashboard
from .db import db_group
from .events import events
from .exporter import exporter
from .logtool import logtool
from .migrate import migrate
from .multi import multi
from .results import results_group
from .shell import report, shell
from .tasks import call, purge, result
from .topology import graph_group, list_group
from .upgrade import upgrade_group
from .worker import worker


@click.group(cls=ErrorHandlingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-A", "--app", "app_name", envvar="CELERIAC_APP",
              help="Application: module, module.celery or module:attribute.")
@click.option("-b", "--broker", help="Broker URL (overrides broker_url).")
@click.option("--result-backend", help="Result store URL (overrides result_backend).")
@click.option("--loader", help="Accepted for Celery's own loaders (default, app); celeriac has "
                               "no other loaders.")
@click.option("--config", "config_module",
              help="Configuration module loaded into the app (config_from_object).")
@click.option("--workdir", type=click.Path(file_okay=False), help="Change to this directory first.")
@click.option("-C", "--no-color", is_flag=True, help="No colors (celeriac prints none but the "
                                                     "events view's).")
@click.option("-q", "--quiet", is_flag=True, help="Less output.")
@click.option("--skip-checks", is_flag=True,
              help="Skip Django's system checks at start-up (also: $SKIP_CHECKS set to any "
                   "non-empty string).")
@click.version_option(package_name="celeriac", prog_name="celeriac")
@click.pass_context
def cli(ctx: click.Context, app_name: str | None, broker: str | None,
        result_backend: str | None, loader: str | None, config_module: str | None,
        workdir: str | None, no_color: bool, quiet: bool, skip_checks: bool) -> None:
    """celeriac: a Celery-compatible task queue."""
    top_level_context(ctx)


#: The entry-point group of commands other packages add (``name = "module:command"``).
PLUGIN_GROUP = "celeriac.commands"


def broken_plugin(name: str, value: str, error: BaseException) -> click.Command:
    """A command standing for a plugin that failed to load: running it says why."""

    def run() -> None:
        raise click.ClickException(f"command {name!r} ({value}) failed to load: "
                                   f"{type(error).__name__}: {error}")

    return click.Command(name, callback=run, help=f"(failed to load: {error})")


def add_plugin_commands(group: click.Group) -> None:
    """Add the commands of the ``celeriac.commands`` entry points to ``group``."""
    for entry in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        if entry.name in group.commands:
            continue
        try:
            command = entry.load()
        except Exception as exc:
            command = broken_plugin(entry.name, entry.value, exc)
        group.add_command(command, entry.name)


for command in (call, result, purge, worker, beat_command, schedule_group, deadletters, status,
                results_group, db_group, dashboard, inspect, control, events, multi,
                exporter, shell, report, migrate, list_group, graph_group, upgrade_group,
                logtool, amqp):
    cli.add_command(command)
add_plugin_commands(cli)


def main(argv: list[str] | None = None, app: Celery | None = None) -> None:
    """Console entry point."""
    obj = CLIContext(None, None, None, _app=app) if app is not None else None
    cli.main(args=argv, prog_name="celeriac", obj=obj)
