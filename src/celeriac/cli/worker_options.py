"""What Celery's ``celery worker`` flags mean in celeriac, beyond the plain settings.

``celeriac worker`` accepts every flag of ``celery worker`` (5.7), so a systemd
unit, supervisor program or Procfile keeps working with ``celery`` replaced by
``celeriac``. Most flags set the matching setting (:func:`apply_settings`); a
few name Celery machinery celeriac does not have, and are accepted with the
meaning documented in docs/workers.md (*Command-line flags from Celery*):

* ``-O fair|default``: celeriac's prefetch never hoards (see *No hoarding*),
  which is what ``-Ofair`` asks for; both profiles are accepted.
* ``--without-gossip``, ``--without-mingle``: celeriac workers neither gossip
  nor mingle (revocations live in the result store, no clocks to sync).
* ``-S/--statedb``: Celery's file of revoked ids; celeriac keeps revocations in
  the result store, where they survive restarts without a file (a warning when
  the app has no result store, because then they are not kept at all).
* ``--executable``: Celery re-executes this interpreter to detach; celeriac
  detaches by forking, so only the interpreter running now can be named.
* ``-P eventlet|gevent|custom``: refused with the pools to use instead.
* ``-c auto``: the CPUs the process may use (affinity mask and cgroup quota).
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import click

logger = logging.getLogger("celeriac.worker")

#: Celery's pool names celeriac has, and its alias
POOLS = {"prefork": "prefork", "processes": "prefork", "threads": "threads",
         "asyncio": "asyncio", "solo": "solo"}
#: Celery's pool names celeriac refuses, with what to use instead
NO_SUCH_POOL = {
    "eventlet": "celeriac has no green-thread pools: use -P asyncio for async def tasks "
                "or -P threads for blocking I/O",
    "gevent": "celeriac has no green-thread pools: use -P asyncio for async def tasks "
              "or -P threads for blocking I/O",
    "custom": "celeriac has no pluggable pools ($CELERY_CUSTOM_WORKER_POOL): use prefork, "
              "threads, asyncio or solo",
}


def pool_name(value: str | None) -> str | None:
    """The celeriac pool for ``-P``; Celery's pools celeriac lacks are refused, naming why."""
    if value is None:
        return None
    if value in NO_SUCH_POOL:
        raise click.UsageError(f"-P {value}: {NO_SUCH_POOL[value]}")
    return POOLS[value]


def cgroup_cpus() -> float | None:
    """The CPU quota of this process's cgroup (v2 ``cpu.max`` or v1 ``cfs_quota``), if any."""
    for quota_file, period_file in (("/sys/fs/cgroup/cpu.max", None),
                                    ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
                                     "/sys/fs/cgroup/cpu/cpu.cfs_period_us")):
        try:
            with open(quota_file) as fh:
                fields = fh.read().split()
            if period_file:
                with open(period_file) as fh:
                    fields = [fields[0], fh.read().strip()]
        except (OSError, IndexError):
            continue
        if len(fields) >= 2 and fields[0] not in ("max", "-1"):
            try:
                return int(fields[0]) / int(fields[1])
            except (ValueError, ZeroDivisionError):
                return None
    return None


def concurrency(value: str | None) -> int | None:
    """``-c N`` or ``-c auto`` (the CPUs the process may use, as Celery 5.7 sizes it)."""
    if value is None:
        return None
    if value == "auto":
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
        quota = cgroup_cpus()
        if quota is not None:
            cpus = min(cpus, max(1, math.ceil(quota)))
        return max(1, cpus)
    try:
        number = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number or 'auto'",
                                 param_hint="'-c' / '--concurrency'") from None
    if number < 1:
        raise click.BadParameter("must be at least 1", param_hint="'-c' / '--concurrency'")
    return number


def include(app: Any, modules: str | None) -> None:
    """``-I a,b``: import these modules with the app's ``include`` (before the tasks run)."""
    names = [name.strip() for name in (modules or "").split(",") if name.strip()]
    if not names:
        return
    current = app.conf.get("include") or ()
    current = (current,) if isinstance(current, str) else tuple(current)
    app.conf.include = current + tuple(n for n in names if n not in current)


def apply_settings(app: Any, options: dict[str, Any]) -> None:
    """The flags that are settings: time limits, child limits, events, prefetch, beat."""
    for key in ("max_tasks_per_child", "max_memory_per_child", "time_limit", "soft_time_limit"):
        if options.get(key) is not None:
            setting = f"worker_{key}" if "child" in key else f"task_{key}"
            app.conf[setting] = options[key]
    if options.get("task_events"):
        app.conf.worker_send_task_events = True
    if options.get("disable_prefetch"):
        app.conf.worker_disable_prefetch = True
    if options.get("pool_start_method"):
        app.conf.worker_pool_start_method = options["pool_start_method"]
    if options.get("scheduler"):
        app.conf.beat_scheduler = options["scheduler"]
    include(app, options.get("include"))


def check_statedb(app: Any, statedb: str | None) -> None:
    """``--statedb``: revocations already survive restarts, in the result store."""
    if statedb and app.backend_url is None:
        click.echo(f"warning: --statedb {statedb} is not used: celeriac keeps revocations in "
                   f"the result store, and this app has none (result_backend), so revoked "
                   f"tasks are not remembered", err=True)
