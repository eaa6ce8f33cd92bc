"""The live view of ``celeriac events``: workers and latest tasks, redrawn with Rich.

Needs ``rich`` (``pip install 'celeriac[monitoring]'``). Events are received
on a background thread into a :class:`~celeriac.events.state.State`; the
screen is redrawn twice a second until Ctrl-C (or ``limit``/``timeout``).
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from ..events.state import State

if TYPE_CHECKING:
    from ..app.base import Celery

ROWS = 30


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S") if ts else "-"


def render(state: State) -> Any:
    from rich.console import Group
    from rich.table import Table

    workers = Table(title="Workers", expand=True)
    for column in ("worker", "status", "active", "processed", "load", "last heartbeat"):
        workers.add_column(column)
    for w in sorted(state.workers.values(), key=lambda w: w.hostname):
        workers.add_row(w.hostname, "[green]ONLINE[/]" if w.alive else "[red]OFFLINE[/]",
                        str(w.active), str(w.processed),
                        " ".join(f"{x:.2f}" for x in (w.loadavg or [])),
                        _when(w.heartbeats[-1] if w.heartbeats else None))
    tasks = Table(title=f"Tasks (latest {ROWS} of {state.task_count}; "
                        f"{state.event_count} events)", expand=True)
    for column in ("time", "uuid", "name", "state", "worker", "runtime", "result / exception"):
        tasks.add_column(column, overflow="ellipsis", no_wrap=True)
    colour = {"SUCCESS": "green", "FAILURE": "red", "STARTED": "yellow", "RETRY": "magenta",
              "REVOKED": "red", "REJECTED": "red"}
    for uuid, task in state.tasks_by_time(ROWS):
        paint = colour.get(task.state, "white")
        tasks.add_row(_when(task.timestamp), uuid, task.name or "?",
                      f"[{paint}]{task.state}[/]",
                      task.worker.hostname if task.worker else "-",
                      f"{task.runtime:.3f}s" if task.runtime is not None else "-",
                      str(task.result if task.result is not None else task.exception or ""))
    return Group(workers, tasks)


def run_view(app: Celery, state: State, *, limit: int | None = None,
             timeout: float | None = None) -> None:
    try:
        from rich.live import Live
    except ImportError:
        raise click.ClickException("the live view needs rich: pip install "
                                   "'celeriac[monitoring]' (or use --dump)") from None
    receiver = app.events.Receiver(handlers={"*": state.event})
    thread = threading.Thread(target=receiver.capture,
                              kwargs={"limit": limit, "timeout": timeout}, daemon=True)
    thread.start()
    try:
        with Live(render(state), refresh_per_second=4, screen=False) as live:
            while thread.is_alive():
                time.sleep(0.5)
                live.update(render(state))
    except KeyboardInterrupt:
        receiver.should_stop = True
