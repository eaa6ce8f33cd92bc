"""``celeriac worker``: start a worker node (Celery's options)."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from ..worker.main import Worker
from .base import CLIContext
from .daemon import Pidfile, check_pidfile, detach


@click.command()
@click.option("-n", "--hostname", help="Node name, e.g. w1@%h.")
@click.option("-Q", "--queues", help="Comma-separated queues to consume.")
@click.option("-X", "--exclude-queues", help="Queues not to consume.")
@click.option("-c", "--concurrency", type=int, help="Number of child processes/threads.")
@click.option("-P", "--pool", type=click.Choice(["prefork", "threads", "asyncio", "solo"]),
              help="Pool implementation.")
@click.option("-l", "--loglevel", default="WARNING", show_default=True)
@click.option("-f", "--logfile", help="Log to this file.")
@click.option("-B", "--beat", is_flag=True, help="Also run the periodic task scheduler.")
@click.option("--prefetch-multiplier", type=int,
              help="A fixed prefetch: N-1 extra messages per slot leased ahead (default: "
                   "adaptive, see worker_prefetch_budget).")
@click.option("--max-tasks-per-child", type=int)
@click.option("--max-memory-per-child", type=int, help="KiB of RSS before a child is replaced.")
@click.option("--time-limit", type=float)
@click.option("--soft-time-limit", type=float)
@click.option("--autoscale", help="max,min child processes.")
@click.option("--pidfile", help="Write the worker's pid here (refuses to start if it names "
                                 "a live process).")
@click.option("-D", "--detach", is_flag=True, help="Run in the background (a daemon).")
@click.option("--umask", help="The worker's umask (octal, e.g. 022).")
@click.option("--liveness-file", help="Touch this file whenever the worker makes progress.")
@click.option("-E", "--task-events", is_flag=True, help="Send task events.")
@click.option("--purge", "--discard", "purge", is_flag=True,
              help="Delete the waiting messages of the worker's queues before starting.")
@click.option("--metrics-port", type=int, help="Serve Prometheus metrics of this node on this "
                                               "port (0: any free port; turns on -E).")
@click.option("--metrics-addr", default="127.0.0.1", show_default=True,
              help="Address the metrics endpoint listens on.")
@click.option("--without-heartbeat", is_flag=True, hidden=True)
@click.option("--without-gossip", is_flag=True, hidden=True)
@click.option("--without-mingle", is_flag=True, hidden=True)
@click.pass_obj
def worker(obj: CLIContext, hostname: str | None, queues: str | None,
           exclude_queues: str | None, concurrency: int | None, pool: str | None,
           loglevel: str, logfile: str | None, beat: bool, prefetch_multiplier: int | None,
           **options: Any) -> None:
    """Start a worker."""
    app = obj.app
    names = [q for q in (queues or "").split(",") if q] or [app.conf.task_default_queue]
    excluded = set((exclude_queues or "").split(","))
    names = [q for q in names if q not in excluded]
    pidfile = options.pop("pidfile", None)
    if pidfile:
        check_pidfile(pidfile)
    if options.pop("purge", False):
        total = sum(app.broker.purge(q) for q in names)
        click.echo(f"Purged {total} message{'s' if total != 1 else ''} from {len(names)} "
                   f"known task queue{'s' if len(names) != 1 else ''}.")
    umask = options.pop("umask", None)
    if options.pop("detach", False):
        detach(logfile, None, int(umask, 8) if umask else None)
    elif umask:
        os.umask(int(umask, 8))
    if options.pop("purge", False):
        total = sum(app.broker.purge(q) for q in names)
        click.echo(f"Purged {total} message{'s' if total != 1 else ''} from {len(names)} "
                   f"known task queue{'s' if len(names) != 1 else ''}.")
    for key in ("max_tasks_per_child", "max_memory_per_child", "time_limit", "soft_time_limit"):
        if options.get(key) is not None:
            setting = f"worker_{key}" if "child" in key else f"task_{key}"
            app.conf[setting] = options[key]
    if options.get("task_events"):
        app.conf.worker_send_task_events = True
    held = Pidfile(pidfile) if pidfile else None
    if held is not None:
        held.write()
    node = Worker(app, hostname=hostname, queues=names, concurrency=concurrency, pool=pool,
                  loglevel=loglevel, logfile=logfile, beat=beat,
                  prefetch_multiplier=prefetch_multiplier, autoscale=options.get("autoscale"),
                  liveness_file=options.get("liveness_file"),
                  without_heartbeat=options.get("without_heartbeat"),
                  metrics_port=options.get("metrics_port"),
                  metrics_addr=options.get("metrics_addr"), quiet=obj.quiet)
    try:
        code = node.start()
    finally:
        if held is not None:
            held.remove()
    sys.exit(code)
