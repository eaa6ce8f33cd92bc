"""CLI: ``celeriac -A proj beat`` and ``celeriac -A proj schedule list|add|remove|...``.

Both are click commands the main CLI registers; they take the app from the
click context object (``obj.app``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from datetime import datetime
from typing import Any

import click

from ..beat.scheduler import scheduler_class
from ..schedules.editing import EntryInfo, Schedules
from ..schedules.kinds import crontab
from ..signals import beat_init, setup_logging
from ..version import __version__
from ..worker.main import expand_hostname
from .daemon import daemon_options, daemonize

logger = logging.getLogger("celeriac.beat")


def _schedules(obj: Any) -> Schedules:
    # ``obj.clock`` is an optional test seam (a celeriac.schedules.clock.Clock).
    return Schedules(obj.app, clock=getattr(obj, "clock", None))


@click.command("beat")
@click.option("-l", "--loglevel", default="INFO", show_default=True,
              help="Logging level (DEBUG, INFO, WARNING, ERROR).")
@click.option("-S", "--scheduler", "scheduler_cls", default=None,
              help="Scheduler class (module:Class, beat_scheduler), e.g. "
                   "celeriac.contrib.django.beat.schedulers:DatabaseScheduler. Celery's "
                   "default and django_celery_beat's DatabaseScheduler are accepted.")
@click.option("-s", "--schedule", "schedule_file", default=None,
              help="Accepted for Celery compatibility; state lives in the schedule store.")
@click.option("--max-interval", type=float, default=None,
              help="Longest sleep between ticks in seconds (beat_max_loop_interval).")
@click.option("--store", "store_url", default=None,
              help="Schedule store URL (beat_schedule_store), e.g. sqlite:///beat.db.")
@click.option("-n", "--hostname", help="This scheduler's node name in the leader lease and "
                                       "logs (%h expands; the pid is appended).")
@click.option("--enable-remote-control/--no-enable-remote-control", default=None,
              help="Celery's beat ping: celeriac beat has no mailbox (--enable warns); "
                   "check it with 'celeriac schedule list'.")
@daemon_options
@click.pass_obj
def beat_command(obj: Any, loglevel: str, scheduler_cls: str | None, schedule_file: str | None,
                 max_interval: float | None, store_url: str | None, hostname: str | None,
                 enable_remote_control: bool | None, daemon: dict[str, Any]) -> None:
    """Run a periodic-task scheduler (several may run at once)."""
    if enable_remote_control:
        click.echo("warning: --enable-remote-control: celeriac beat does not answer remote "
                   "control; see its leader and last runs with 'celeriac schedule list'",
                   err=True)
    app = obj.app
    with daemonize(daemon):
        _logging(loglevel, daemon.get("logfile"))
        if store_url:
            app.conf.beat_schedule_store = store_url
        cls = scheduler_class(scheduler_cls or app.conf.get("beat_scheduler"))
        node: dict[str, Any] = ({"node_id": f"{expand_hostname(hostname)}:{os.getpid()}"}
                                if hostname else {})
        _run(obj, cls(app, max_interval=max_interval, **node))


def _logging(loglevel: str, logfile: str | None) -> None:
    if setup_logging.receivers:  # Celery's rule: they configure logging instead
        setup_logging.send(sender=None, loglevel=loglevel.upper(), logfile=logfile,
                           format=None, colorize=False)
    else:
        logging.basicConfig(level=loglevel.upper(), filename=logfile,
                            format="[%(asctime)s: %(levelname)s/%(name)s] %(message)s")


def _run(obj: Any, sched: Any) -> None:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    beat_init.send(sender=sched)
    if not obj.quiet:
        click.echo(f"celeriac beat v{_version()} is starting (node {sched.node_id}, "
                   f"store {sched.store.url}).")
    sched.run(stop)


def _version() -> str:
    return __version__


@click.group("schedule")
def schedule_group() -> None:
    """List and edit periodic tasks at runtime; running schedulers see changes in one tick."""


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


def _row(info: EntryInfo) -> dict[str, Any]:
    return {"name": info.name, "task": info.task, "schedule": info.schedule,
            "enabled": info.enabled, "args": list(info.args), "kwargs": dict(info.kwargs),
            "options": dict(info.options), "last_run_at": _when(info.last_run_at),
            "next_run_at": _when(info.next_run_at), "total_run_count": info.total_run_count,
            "missed": info.missed, "max_lateness": info.max_lateness, "source": info.source}


@schedule_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_command(obj: Any, as_json: bool) -> None:
    """Show every entry with its last run, next run and run count."""
    rows = [_row(info) for info in _schedules(obj).list()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    headers = ("name", "task", "schedule", "enabled", "last_run_at", "next_run_at",
               "total_run_count")
    table = [[str(r[h]) for h in headers] for r in rows]
    widths = [max([len(h), *(len(row[i]) for row in table)]) for i, h in enumerate(headers)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


def _json_arg(value: str | None, kind: type, what: str) -> Any:
    if value is None:
        return kind()
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{what} must be JSON: {exc}") from None
    if not isinstance(parsed, kind):
        raise click.BadParameter(f"{what} must be a JSON {kind.__name__}")
    return parsed


@schedule_group.command("add")
@click.argument("name")
@click.argument("task")
@click.option("--every", type=float, help="Interval in seconds.")
@click.option("--cron", "cron_expr", help="Crontab 'minute hour day-of-month month day-of-week'.")
@click.option("--args", "args_json", help="Positional arguments as a JSON list.")
@click.option("--kwargs", "kwargs_json", help="Keyword arguments as a JSON object.")
@click.option("--options", "options_json", help="Publish options as a JSON object.")
@click.option("-Q", "--queue", help="Queue to send to.")
@click.option("--missed", type=click.Choice(["latest", "skip", "all"]), default="latest",
              show_default=True, help="Missed-run policy.")
@click.option("--max-lateness", type=float, help="Seconds a fire may be late and still run.")
@click.option("--disabled", is_flag=True, help="Create the entry disabled.")
@click.option("--replace", is_flag=True, help="Redefine the entry if it exists.")
@click.pass_obj
def add_command(obj: Any, name: str, task: str, every: float | None, cron_expr: str | None,
                args_json: str | None, kwargs_json: str | None, options_json: str | None,
                queue: str | None, missed: str, max_lateness: float | None, disabled: bool,
                replace: bool) -> None:
    """Add (or with --replace, redefine) the periodic task NAME running TASK."""
    if (every is None) == (cron_expr is None):
        raise click.UsageError("give exactly one of --every SECONDS or --cron EXPR")
    try:
        sched: Any = crontab.from_string(cron_expr) if cron_expr else every
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--cron") from None
    options = _json_arg(options_json, dict, "--options")
    if queue:
        options["queue"] = queue
    try:
        info = _schedules(obj).add(
            name, task, sched, _json_arg(args_json, list, "--args"),
            _json_arg(kwargs_json, dict, "--kwargs"), options, missed=missed,
            max_lateness=max_lateness, enabled=not disabled, replace=replace)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"added {info.name}: {info.task} {info.schedule} (next run "
               f"{_when(info.next_run_at)})")


def _by_name(action: str, help_text: str) -> Any:
    @schedule_group.command(action, help=help_text)
    @click.argument("name")
    @click.pass_obj
    def command(obj: Any, name: str) -> None:
        schedules = _schedules(obj)
        try:
            if action == "remove":
                if not schedules.remove(name):
                    raise KeyError(name)
                click.echo(f"removed {name}")
            elif action == "run-now":
                click.echo(f"sent {name}: task id {schedules.run_now(name)}")
            else:
                info = getattr(schedules, action)(name)
                click.echo(f"{action}d {info.name}")
        except KeyError:
            raise click.ClickException(f"no periodic task named {name!r}") from None
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from None

    return command


remove_command = _by_name("remove", "Remove the periodic task NAME.")
enable_command = _by_name("enable", "Enable NAME (missed fires while disabled are not run).")
disable_command = _by_name("disable", "Disable NAME.")
run_now_command = _by_name("run-now", "Send NAME's task now (counted in its run count).")
