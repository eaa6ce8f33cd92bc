"""``celeriac worker``: start a worker node, with every option of ``celery worker``.

What the options Celery has and celeriac maps differently mean is in :mod:`.worker_options`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from ..worker.main import Worker
from .base import CLIContext
from .daemon import Pidfile, check_executable, check_pidfile, detach, drop_privileges
from .worker_options import (
    NO_SUCH_POOL,
    POOLS,
    apply_settings,
    check_statedb,
    pool_name,
)
from .worker_options import concurrency as parse_concurrency


@click.command()
@click.option("-n", "--hostname", help="Node name, e.g. w1@%h.")
@click.option("-Q", "--queues", help="Comma-separated queues to consume.")
@click.option("-X", "--exclude-queues", help="Queues not to consume.")
@click.option("-I", "--include", help="Comma-separated modules to import (with the app's "
                                       "include setting).")
@click.option("-c", "--concurrency", help="Number of child processes/threads, or 'auto' "
                                           "(the CPUs this process may use).")
@click.option("-P", "--pool", type=click.Choice([*POOLS, *NO_SUCH_POOL]),
              help="Pool implementation (processes = prefork; eventlet/gevent/custom are "
                   "refused).")
@click.option("--pool-start-method", type=click.Choice(["fork", "spawn"]),
              help="How prefork children start (worker_pool_start_method).")
@click.option("-l", "--loglevel", default="WARNING", show_default=True)
@click.option("-f", "--logfile", help="Log to this file.")
@click.option("-B", "--beat", is_flag=True, help="Also run the periodic task scheduler.")
@click.option("--scheduler", help="-B: scheduler class (beat_scheduler).")
@click.option("-s", "--schedule-filename", "--schedule", "schedule_filename",
              help="-B: accepted; schedule state lives in the schedule store.")
@click.option("-S", "--statedb", help="Accepted: revocations are kept in the result store.")
@click.option("-O", "--optimization", type=click.Choice(["default", "fair"]),
              help="Accepted: the prefetch never hoards (what -Ofair asks for).")
@click.option("--prefetch-multiplier", type=int,
              help="A fixed prefetch: N-1 extra messages per slot leased ahead (default: "
                   "adaptive, see worker_prefetch_budget).")
@click.option("--disable-prefetch", is_flag=True,
              help="Lease only what free slots start now (worker_disable_prefetch).")
@click.option("--max-tasks-per-child", type=int)
@click.option("--max-memory-per-child", type=int, help="KiB of RSS before a child is replaced.")
@click.option("--time-limit", type=float)
@click.option("--soft-time-limit", type=float)
@click.option("--autoscale", help="max,min child processes.")
@click.option("--pidfile", help="Write the worker's pid here (refuses to start if it names "
                                 "a live process).")
@click.option("-D", "--detach", is_flag=True, help="Run in the background (a daemon).")
@click.option("--uid", help="Drop privileges to this user (name or id).")
@click.option("--gid", help="Drop privileges to this group (name or id).")
@click.option("--umask", help="The worker's umask (octal, e.g. 022).")
@click.option("--executable", help="Accepted when it is the running Python (celeriac "
                                    "detaches by forking).")
@click.option("--liveness-file", help="Touch this file whenever the worker makes progress.")
@click.option("-E", "--task-events", "--events", "task_events", is_flag=True,
              help="Send task events.")
@click.option("--purge", "--discard", "purge", is_flag=True,
              help="Delete the waiting messages of the worker's queues before starting.")
@click.option("--metrics-port", type=int, help="Serve Prometheus metrics of this node on this "
                                               "port (0: any free port; turns on -E).")
@click.option("--metrics-addr", default="127.0.0.1", show_default=True,
              help="Address the metrics endpoint listens on.")
@click.option("--without-heartbeat", is_flag=True,
              help="Send no worker-online/heartbeat/offline events.")
@click.option("--heartbeat-interval", type=float,
              help="Seconds between worker-heartbeat events (default 2).")
@click.option("--without-gossip", is_flag=True, help="Accepted: celeriac workers do not gossip.")
@click.option("--without-mingle", is_flag=True,
              help="Accepted: celeriac workers do not mingle (nothing to sync).")
@click.pass_obj
def worker(obj: CLIContext, hostname: str | None, queues: str | None,
           exclude_queues: str | None, concurrency: str | None, pool: str | None,
           loglevel: str, logfile: str | None, beat: bool, prefetch_multiplier: int | None,
           **options: Any) -> None:
    """Start a worker."""
    pool = pool_name(pool)
    slots = parse_concurrency(concurrency)
    check_executable(options.get("executable"))
    app = obj.app
    names = [q for q in (queues or "").split(",") if q] or [app.conf.task_default_queue]
    excluded = set((exclude_queues or "").split(","))
    names = [q for q in names if q not in excluded]
    apply_settings(app, options)
    check_statedb(app, options.get("statedb"))
    pidfile = options.pop("pidfile", None)
    if pidfile:
        check_pidfile(pidfile)
    drop_privileges(options.get("uid"), options.get("gid"))
    if options.pop("purge", False):
        total = sum(app.broker.purge(q) for q in names)
        click.echo(f"Purged {total} message{'s' if total != 1 else ''} from {len(names)} "
                   f"known task queue{'s' if len(names) != 1 else ''}.")
    umask = options.pop("umask", None)
    if options.pop("detach", False):
        detach(logfile, None, int(umask, 8) if umask else None)
    elif umask:
        os.umask(int(umask, 8))
    held = Pidfile(pidfile) if pidfile else None
    if held is not None:
        held.write()
    node = Worker(app, hostname=hostname, queues=names, concurrency=slots, pool=pool,
                  loglevel=loglevel, logfile=logfile, beat=beat,
                  prefetch_multiplier=prefetch_multiplier, autoscale=options.get("autoscale"),
                  liveness_file=options.get("liveness_file"),
                  without_heartbeat=options.get("without_heartbeat"),
                  heartbeat_interval=options.get("heartbeat_interval"),
                  metrics_port=options.get("metrics_port"),
                  metrics_addr=options.get("metrics_addr"), quiet=obj.quiet)
    try:
        code = node.start()
    finally:
        if held is not None:
            held.remove()
    sys.exit(code)
