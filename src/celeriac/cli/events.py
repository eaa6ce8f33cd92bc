"""``celeriac events``: watch the cluster through its events (Celery's ``celery events``).

* ``celeriac events`` -- a live terminal view (Rich, the ``monitoring`` extra):
  workers with their heartbeat, active and processed counts, and the latest
  tasks with state, worker, runtime and result or exception.
* ``celeriac events --dump`` -- every event as one line, as Celery's dumper.
* ``celeriac events --camera CLASS --frequency 2.0`` -- every ``--frequency``
  seconds, hand a snapshot of the state to a camera (Kuma's ``celerycam``):
  ``--camera sqlite`` (:class:`celeriac.events.snapshot.SQLiteCamera`) writes
  workers and tasks to a SQLite file (``--camera-db``); any ``module:Class``
  with Celery's ``Polaroid`` interface (``on_shutter(state)``) works too;
  ``--detach`` (with ``-f``, ``--pidfile``, ``--uid``/``--gid``, ``--umask``)
  runs the camera as a daemon, as Celery's.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Any

import click

from ..app.loaders import import_object
from ..events.snapshot import CAMERAS, run_camera
from ..events.state import State
from .base import CLIContext
from .daemon import daemon_options, daemonize


def _line(event: dict[str, Any]) -> str:
    when = datetime.fromtimestamp(float(event.get("timestamp") or time.time()))
    kind = event.get("type", "?")
    fields = {k: v for k, v in event.items()
              if k not in ("type", "timestamp", "hostname", "local_received", "clock",
                           "utcoffset", "pid")}
    extra = ", ".join(f"{k}={v}" for k, v in fields.items())
    return f"{when:%Y-%m-%d %H:%M:%S}.{when.microsecond // 1000:03d} [{event.get('hostname')}] " \
           f"{kind}: {extra}"


@click.command()
@click.option("-d", "--dump", is_flag=True, help="Print every event (raw).")
@click.option("-c", "--camera", help="Snapshot camera: sqlite or module:Class.")
@click.option("-F", "--frequency", "--freq", "frequency", type=float, default=1.0,
              show_default=True, help="Seconds between camera snapshots.")
@click.option("-r", "--maxrate", help="Snapshots per time unit (e.g. 10/m); overrides -F.")
@click.option("--camera-db", default="celeriac-events.sqlite3", show_default=True,
              help="The SQLite camera's database file.")
@click.option("--limit", type=int, help="Stop after this many events.")
@click.option("--timeout", type=float, help="Stop after this many quiet seconds.")
@click.option("--json", "as_json", is_flag=True, help="--dump: one JSON object per line.")
@click.option("-l", "--loglevel", default="WARNING", show_default=True,
              help="Logging level (the camera's log).")
@daemon_options
@click.pass_obj
def events(obj: CLIContext, dump: bool, camera: str | None, frequency: float,
           maxrate: str | None, camera_db: str, limit: int | None, timeout: float | None,
           as_json: bool, loglevel: str, daemon: dict[str, Any]) -> None:
    """Watch workers and tasks through their events."""
    app = obj.app
    if daemon["detach"] and not camera:
        raise click.UsageError("--detach runs a camera in the background: give --camera "
                               "(the live view and --dump need a terminal)")
    if camera or daemon["logfile"]:
        logging.basicConfig(level=loglevel.upper(), filename=daemon["logfile"],
                            format="[%(asctime)s: %(levelname)s/%(name)s] %(message)s")
    with daemonize(daemon):
        _watch(app, dump, camera, frequency, maxrate, camera_db, limit, timeout, as_json)


def _watch(app: Any, dump: bool, camera: str | None, frequency: float, maxrate: str | None,
           camera_db: str, limit: int | None, timeout: float | None, as_json: bool) -> None:
    if dump:
        receiver = app.events.Receiver(handlers={"*": lambda e: click.echo(
            json.dumps(e) if as_json else _line(e))})
        click.echo("-> celeriac events: dumping events (Ctrl-C to stop)", err=True)
        _capture(receiver, limit, timeout)
        return
    if camera:
        if maxrate:
            frequency = _rate_to_seconds(maxrate)
        factory = CAMERAS.get(camera) or import_object(camera)
        click.echo(f"-> celeriac events: camera {camera}, shutter every {frequency}s",
                   err=True)
        run_camera(app, factory, frequency, db=camera_db, limit=limit, timeout=timeout)
        return
    from .events_view import run_view

    run_view(app, State(), limit=limit, timeout=timeout)


def _capture(receiver: Any, limit: int | None, timeout: float | None) -> None:
    try:
        receiver.capture(limit=limit, timeout=timeout, wakeup=True)
    except KeyboardInterrupt:
        pass


def _rate_to_seconds(rate: str) -> float:
    """``10/m`` -> 6.0 seconds between snapshots."""
    count, _, unit = rate.partition("/")
    per = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(unit or "s")
    try:
        value = float(count)
    except ValueError:
        value = 0.0
    if per is None or value <= 0:
        raise click.BadParameter(f"--maxrate {rate!r}: use N/s, N/m or N/h")
    return per / value
