"""``celeriac call``, ``celeriac result`` and ``celeriac purge``: tasks from the shell."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..exceptions import TimeoutError as ResultTimeout
from .base import CLIContext, comma_list, json_arg, known_queues


@click.command()
@click.argument("name")
@click.option("-a", "--args", help='Positional arguments as JSON, e.g. \'[2, 2]\'.')
@click.option("-k", "--kwargs", help="Keyword arguments as JSON object.")
@click.option("--eta", help="ISO 8601 time to run at.")
@click.option("--countdown", type=float, help="Seconds to wait before running.")
@click.option("--expires", help="Seconds or ISO 8601 time after which the task is dropped.")
@click.option("--queue", "-Q", help="Queue to send to.")
@click.option("--exchange", help="Exchange to publish to (RabbitMQ; other brokers route by "
                                 "queue and warn, as exchange= does).")
@click.option("--routing-key", help="Routing key (the queue, except on RabbitMQ exchanges).")
@click.option("--serializer", help="Serializer of the arguments (task_serializer).")
@click.option("--priority", type=int, help="Priority 0-9 (0 is served first).")
@click.pass_obj
def call(obj: CLIContext, name: str, args: str | None, kwargs: str | None, eta: str | None,
         countdown: float | None, expires: str | None, queue: str | None,
         exchange: str | None, routing_key: str | None, serializer: str | None,
         priority: int | None) -> None:
    """Send a task by name and print its id."""
    a = json_arg(args, "--args", list)
    k = json_arg(kwargs, "--kwargs", dict)
    exp: Any = expires
    if expires is not None:
        try:
            exp = float(expires)
        except ValueError:
            exp = expires
    options = {key: value for key, value in (("exchange", exchange),
                                             ("routing_key", routing_key),
                                             ("serializer", serializer)) if value}
    result = obj.app.send_task(name, a, k, eta=eta, countdown=countdown, expires=exp,
                               queue=queue, priority=priority, **options)
    click.echo(result.id)


@click.command()
@click.argument("task_id")
@click.option("-t", "--task", help="Task name: read the result through that task's "
                                   "AsyncResult (a task with a store of its own).")
@click.option("--traceback", "show_tb", is_flag=True,
              help="Show the stored traceback instead (at once, without waiting).")
@click.option("--timeout", type=float,
              help="Wait at most this many seconds (default: until the task is done, as Celery).")
@click.pass_obj
def result(obj: CLIContext, task_id: str, task: str | None, show_tb: bool,
           timeout: float | None) -> None:
    """Wait for a task and print its return value (as Celery's ``celery result``).

    A failure or revocation is printed on stderr with exit status 1; ``--timeout``
    bounds the wait (exit status 1 and the state so far when it runs out). As Celery's,
    ``--traceback`` prints the traceback stored so far without waiting."""
    app = obj.app
    if task:
        if task not in app.tasks:
            raise click.BadParameter(f"no task named {task!r}", param_hint="--task")
        res = app.tasks[task].AsyncResult(task_id)
    else:
        res = app.AsyncResult(task_id)
    if show_tb:
        click.echo(res.traceback or "")
        return
    try:
        res.get(timeout=timeout, propagate=False, disable_sync_subtasks=False)
    except ResultTimeout:
        click.echo(f"{res.state}: not done after {timeout:g} s", err=True)
        sys.exit(1)
    except Exception as exc:
        raise click.ClickException(str(exc)) from None
    if res.state != "SUCCESS":
        click.echo(f"{res.state}: {res.result!r}", err=True)
        sys.exit(1)
    click.echo(res.result)


@click.command()
@click.option("-Q", "--queues", help="Comma-separated queues (default: the queues task_queues "
                                     "declares, else task_default_queue).")
@click.option("-X", "--exclude-queues", help="Queues to leave alone.")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def purge(obj: CLIContext, queues: str | None, exclude_queues: str | None, force: bool) -> None:
    """Delete all waiting (ready and delayed) messages of the queues."""
    app = obj.app
    names = comma_list(queues) or known_queues(app)
    excluded = set((exclude_queues or "").split(","))
    names = [q for q in names if q not in excluded]
    if not force and sys.stdin.isatty():
        click.confirm(f"Delete all messages in {', '.join(names)}?", abort=True)
    total = sum(app.broker.purge(q) for q in names)
    click.echo(f"Purged {total} message{'s' if total != 1 else ''} from "
               f"{len(names)} known task queue{'s' if len(names) != 1 else ''}.")
