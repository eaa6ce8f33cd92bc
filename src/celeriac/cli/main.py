"""The ``celeriac`` command group: global options and every subcommand, registered here.

Global options mirror Celery's (``-A/--app``, ``-b/--broker``,
``--result-backend``, ``--workdir``). Each command group lives in its own
module: :mod:`.tasks` (call, result, purge), :mod:`.worker`, :mod:`.beat`
(beat, schedule), :mod:`.admin` (deadletters, status), :mod:`.db` (the
PostgreSQL schema: migrate, status, vacuum).
"""

from __future__ import annotations

import os

import click

from ..app.base import Celery
from .admin import deadletters, status
from .base import CLIContext, ErrorHandlingGroup
from .beat import beat_command, schedule_group
from .db import db_group
from .tasks import call, purge, result
from .worker import worker


@click.group(cls=ErrorHandlingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-A", "--app", "app_name", envvar="CELERIAC_APP",
              help="Application: module, module.celery or module:attribute.")
@click.option("-b", "--broker", help="Broker URL (overrides broker_url).")
@click.option("--result-backend", help="Result store URL (overrides result_backend).")
@click.option("--workdir", type=click.Path(file_okay=False), help="Change to this directory first.")
@click.option("-q", "--quiet", is_flag=True, help="Less output.")
@click.version_option(package_name="celeriac", prog_name="celeriac")
@click.pass_context
def cli(ctx: click.Context, app_name: str | None, broker: str | None,
        result_backend: str | None, workdir: str | None, quiet: bool) -> None:
    """celeriac: a Celery-compatible task queue."""
    if workdir:
        os.chdir(workdir)
    if ctx.obj is None:
        ctx.obj = CLIContext(app_name, broker, result_backend)


for command in (call, result, purge, worker, beat_command, schedule_group, deadletters, status,
                db_group):
    cli.add_command(command)


def main(argv: list[str] | None = None, app: Celery | None = None) -> None:
    """Console entry point."""
    obj = CLIContext(None, None, None, _app=app) if app is not None else None
    cli.main(args=argv, prog_name="celeriac", obj=obj)
