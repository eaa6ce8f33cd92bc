"""The ``celeriac`` command: ``worker``, ``call``, ``result``, ``purge`` and friends.

Global options mirror Celery's (``-A/--app``, ``-b/--broker``,
``--result-backend``, ``--workdir``). Errors name the problem (unknown app
module, unreachable broker, bad JSON) and exit with status 1, no traceback.
Other command groups (beat, schedule, deadletters, inspect...) register
themselves in :func:`_register_extensions`.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

import click

from .app import Celery
from .exceptions import CeleriacError, ImproperlyConfigured, OperationalError


@dataclass
class CLIContext:
    """What every subcommand gets as ``ctx.obj``."""

    app_name: str | None
    broker: str | None
    result_backend: str | None
    _app: Celery | None = None

    @property
    def app(self) -> Celery:
        if self._app is None:
            self._app = load_app(self.app_name)
            if self.broker:
                self._app.conf.broker_url = self.broker
            if self.result_backend:
                self._app.conf.result_backend = self.result_backend
        return self._app


def load_app(name: str | None) -> Celery:
    """Find the app for ``-A``: ``proj``, ``proj.celery``, ``proj:app`` or ``proj.celery:app``."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if not name:
        from ._state import get_current_app

        return get_current_app()
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise click.ClickException(
                f"Unable to load celeriac application. The module {module_name} was not "
                f"found.") from None
        raise
    if attr:
        app = getattr(module, attr, None)
        if not isinstance(app, Celery):
            raise click.ClickException(f"{name} is not a Celery application")
        return app
    found = _find_app(module)
    if found is None:
        try:
            sub = importlib.import_module(f"{module_name}.celery")
            found = _find_app(sub)
        except ModuleNotFoundError:
            found = None
    if found is None:
        raise click.ClickException(
            f"Unable to load celeriac application: no Celery app found in {module_name} "
            f"(use -A module:attribute)")
    return found


def _find_app(module: Any) -> Celery | None:
    for attr in ("app", "celery", "celery_app"):
        candidate = getattr(module, attr, None)
        if isinstance(candidate, Celery):
            return candidate
    for value in vars(module).values():
        if isinstance(value, Celery):
            return value
    return None


class ErrorHandlingGroup(click.Group):
    """Turns configuration and connection errors into one clear line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ImproperlyConfigured, OperationalError, CeleriacError) as exc:
            raise click.ClickException(str(exc)) from None


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


def _json_arg(value: str | None, what: str, kind: type) -> Any:
    if not value:
        return kind()
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise click.ClickException(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(parsed, kind):
        raise click.ClickException(f"{what} must be a JSON {kind.__name__}")
    return parsed


@cli.command()
@click.argument("name")
@click.option("-a", "--args", help='Positional arguments as JSON, e.g. \'[2, 2]\'.')
@click.option("-k", "--kwargs", help="Keyword arguments as JSON object.")
@click.option("--eta", help="ISO 8601 time to run at.")
@click.option("--countdown", type=float, help="Seconds to wait before running.")
@click.option("--expires", help="Seconds or ISO 8601 time after which the task is dropped.")
@click.option("--queue", "-Q", help="Queue to send to.")
@click.option("--priority", type=int, help="Priority 0-9 (0 is served first).")
@click.pass_obj
def call(obj: CLIContext, name: str, args: str | None, kwargs: str | None, eta: str | None,
         countdown: float | None, expires: str | None, queue: str | None,
         priority: int | None) -> None:
    """Send a task by name and print its id."""
    a = _json_arg(args, "--args", list)
    k = _json_arg(kwargs, "--kwargs", dict)
    exp: Any = expires
    if expires is not None:
        try:
            exp = float(expires)
        except ValueError:
            exp = expires
    result = obj.app.send_task(name, a, k, eta=eta, countdown=countdown, expires=exp,
                               queue=queue, priority=priority)
    click.echo(result.id)


@cli.command()
@click.argument("task_id")
@click.option("-t", "--task", help="Task name (accepted for Celery compatibility).")
@click.option("--traceback", "show_tb", is_flag=True, help="Show the traceback of a failure.")
@click.option("--timeout", type=float, help="Wait up to this many seconds for the result.")
@click.pass_obj
def result(obj: CLIContext, task_id: str, task: str | None, show_tb: bool,
           timeout: float | None) -> None:
    """Print the state and result of a task."""
    res = obj.app.AsyncResult(task_id)
    if timeout:
        try:
            res.get(timeout=timeout, propagate=False, disable_sync_subtasks=False)
        except Exception as exc:
            raise click.ClickException(str(exc)) from None
    if show_tb:
        click.echo(res.traceback or "")
        return
    value = res.result
    click.echo(f"{res.state}: {value!r}" if res.state != "SUCCESS" else json.dumps(
        value, default=repr))


@cli.command()
@click.option("-Q", "--queues", help="Comma-separated queues (default: task_default_queue).")
@click.option("-X", "--exclude-queues", help="Queues to leave alone.")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def purge(obj: CLIContext, queues: str | None, exclude_queues: str | None, force: bool) -> None:
    """Delete all waiting (ready and delayed) messages of the queues."""
    app = obj.app
    names = [q for q in (queues or app.conf.task_default_queue).split(",") if q]
    excluded = set((exclude_queues or "").split(","))
    names = [q for q in names if q not in excluded]
    if not force and sys.stdin.isatty():
        click.confirm(f"Delete all messages in {', '.join(names)}?", abort=True)
    total = sum(app.broker.purge(q) for q in names)
    click.echo(f"Purged {total} message{'s' if total != 1 else ''} from "
               f"{len(names)} known task queue{'s' if len(names) != 1 else ''}.")


@cli.command()
@click.option("-n", "--hostname", help="Node name, e.g. w1@%h.")
@click.option("-Q", "--queues", help="Comma-separated queues to consume.")
@click.option("-X", "--exclude-queues", help="Queues not to consume.")
@click.option("-c", "--concurrency", type=int, help="Number of child processes/threads.")
@click.option("-P", "--pool", type=click.Choice(["prefork", "threads", "asyncio", "solo"]),
              help="Pool implementation.")
@click.option("-l", "--loglevel", default="WARNING", show_default=True)
@click.option("-f", "--logfile", help="Log to this file.")
@click.option("-B", "--beat", is_flag=True, help="Also run the periodic task scheduler.")
@click.option("--prefetch-multiplier", type=int, help="Messages per slot to lease ahead.")
@click.option("--max-tasks-per-child", type=int)
@click.option("--max-memory-per-child", type=int, help="KiB of RSS before a child is replaced.")
@click.option("--time-limit", type=float)
@click.option("--soft-time-limit", type=float)
@click.option("--autoscale", help="max,min child processes.")
@click.option("--pidfile", help="Write the worker's pid here.")
@click.option("--liveness-file", help="Touch this file whenever the worker makes progress.")
@click.option("-E", "--task-events", is_flag=True, help="Send task events.")
@click.option("--without-heartbeat", is_flag=True, hidden=True)
@click.option("--without-gossip", is_flag=True, hidden=True)
@click.option("--without-mingle", is_flag=True, hidden=True)
@click.pass_obj
def worker(obj: CLIContext, hostname: str | None, queues: str | None,
           exclude_queues: str | None, concurrency: int | None, pool: str | None,
           loglevel: str, logfile: str | None, beat: bool, prefetch_multiplier: int | None,
           **options: Any) -> None:
    """Start a worker."""
    from .worker.main import Worker

    app = obj.app
    names = [q for q in (queues or "").split(",") if q] or [app.conf.task_default_queue]
    excluded = set((exclude_queues or "").split(","))
    names = [q for q in names if q not in excluded]
    pidfile = options.pop("pidfile", None)
    for key in ("max_tasks_per_child", "max_memory_per_child", "time_limit", "soft_time_limit"):
        if options.get(key) is not None:
            setting = f"worker_{key}" if "child" in key else f"task_{key}"
            app.conf[setting] = options[key]
    if options.get("task_events"):
        app.conf.worker_send_task_events = True
    if pidfile:
        with open(pidfile, "w") as fh:
            fh.write(str(os.getpid()))
    node = Worker(app, hostname=hostname, queues=names, concurrency=concurrency, pool=pool,
                  loglevel=loglevel, logfile=logfile, beat=beat,
                  prefetch_multiplier=prefetch_multiplier, autoscale=options.get("autoscale"),
                  liveness_file=options.get("liveness_file"))
    try:
        code = node.start()
    finally:
        if pidfile and os.path.exists(pidfile):
            os.unlink(pidfile)
    sys.exit(code)


def _register_extensions() -> None:
    """Add the command groups that live in their own modules, when present."""
    for module_name, attrs in (("celeriac.beat.cli", ("beat_command", "schedule_group")),
                               ("celeriac.worker.admin", ("deadletters", "status")),
                               ("celeriac.monitor.cli", ("inspect", "events")),
                               ("celeriac.brokers.postgres.cli", ("db_group",))):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        for attr in attrs:
            command = getattr(module, attr, None)
            if command is not None:
                cli.add_command(command)


_register_extensions()


def main(argv: list[str] | None = None, app: Celery | None = None) -> None:
    """Console entry point."""
    obj = CLIContext(None, None, None, _app=app) if app is not None else None
    cli.main(args=argv, prog_name="celeriac", obj=obj)
