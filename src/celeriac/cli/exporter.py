"""``celeriac exporter``: Prometheus metrics for the whole cluster (events and queue stats).

``celeriac -A proj exporter --port 9808`` receives every worker's events and
reads the broker's queue statistics at each scrape (see
:mod:`celeriac.metrics.exporter` for the metrics). Workers must send task
events (``-E``) for the task metrics; queue metrics need nothing.
"""

from __future__ import annotations

import time

import click

from ..metrics.exporter import Exporter
from .base import CLIContext


@click.command()
@click.option("--port", type=int, default=9808, show_default=True,
              help="Port of /metrics (0: any free port).")
@click.option("--addr", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("-Q", "--queues", help="Comma-separated queues to report (default: every "
                                     "queue the broker knows and every queue with a target).")
@click.pass_obj
def exporter(obj: CLIContext, port: int, addr: str, queues: str | None) -> None:
    """Serve Prometheus metrics of the cluster."""
    names = [q for q in (queues or "").split(",") if q] or None
    running = Exporter(obj.app, queues=names)
    bound = running.start(port, addr)
    click.echo(f"celeriac exporter: http://{addr}:{bound}/metrics", err=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        running.stop()
