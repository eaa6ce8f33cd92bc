"""``celeriac logtool stats|traces|errors|incomplete|debug FILES``: read worker log files.

As Celery's command, over the lines the worker logs for each task:
``Task name[id] received`` (or Celery 3's ``Received task: name[id]``), then
``succeeded in``, ``failed in``, ``raised unexpected``, ``rejected``,
``ignored``, ``skipped`` or ``terminated``. ``stats`` counts tasks by name and
outcome, ``errors`` prints the lines of tasks that did not succeed, ``traces``
the tracebacks (lines that do not start a log record), ``incomplete`` the ids
received and never finished, ``debug`` every other log line. (Celery 5's own
logtool counts its ``received`` lines as errors; this one reads both formats.)
With no FILES (or ``-``), standard input is read.
"""

from __future__ import annotations

import fileinput
import re
from collections import Counter
from collections.abc import Callable, Iterable

import click

LOG_START = re.compile(r"^\[\d{4}-\d\d-\d\d ")
RECEIVED = re.compile(r"\] (?:Received task: ([\w.:-]+)\[([^\]]+)\]|Task ([\w.:-]+)\[([^\]]+)\] "
                      r"received)")
READY = re.compile(r"\] Task ([\w.:-]+)\[([^\]]+)\] (succeeded|failed|raised|rejected|ignored|"
                   r"skipped|terminated)(.*)")

Echo = Callable[[str], None]


class Audit:
    """Counts what a worker log says about its tasks."""

    def __init__(self, on_error: Echo | None = None, on_trace: Echo | None = None,
                 on_debug: Echo | None = None) -> None:
        self.received: dict[str, str] = {}
        self.ready: set[str] = set()
        self.failed: set[str] = set()
        self.names: Counter[str] = Counter()
        self.on_error, self.on_trace, self.on_debug = on_error, on_trace, on_debug
        self._record: str | None = None

    def run(self, lines: Iterable[str]) -> Audit:
        for line in lines:
            self.feed(line.rstrip("\n"))
        return self

    def feed(self, line: str) -> None:
        if not LOG_START.match(line):
            if self.on_trace and line.strip():
                self.on_trace("\n".join(x for x in (self._record, line) if x))
            self._record = None
            return
        self._record = line
        received, ready = RECEIVED.search(line), READY.search(line)
        if received:
            name, task_id = received.group(1) or received.group(3), \
                received.group(2) or received.group(4)
            if task_id not in self.received:
                self.names[name] += 1
            self.received[task_id] = name
        elif ready:
            task_id, outcome = ready.group(2), ready.group(3)
            self.ready.add(task_id)
            if outcome != "succeeded":
                if task_id not in self.failed and self.on_error:
                    self.on_error(line)
                self.failed.add(task_id)
        elif self.on_debug:
            self.on_debug(line)

    def incomplete(self) -> list[str]:
        return sorted(set(self.received) - self.ready)

    def report(self) -> str:
        total, completed = len(self.received), len(self.ready)
        errors = len(self.failed)
        lines = ["", "Report", "======", f"Task total: {total}", f"Task errors: {errors}",
                 f"Task success: {completed - errors}", f"Task completed: {completed}",
                 "Tasks", "====="]
        lines += [f"{name}: {count}" for name, count in self.names.most_common()]
        return "\n".join(lines)


def _lines(files: tuple[str, ...]) -> Iterable[str]:
    return fileinput.input(files or ("-",), encoding="utf-8", errors="replace")


@click.group("logtool")
def logtool() -> None:
    """Read worker log files: stats, errors, tracebacks, incomplete tasks."""


@logtool.command("stats")
@click.argument("files", nargs=-1)
def stats(files: tuple[str, ...]) -> None:
    """Count the tasks received, completed and failed, by name."""
    click.echo(Audit().run(_lines(files)).report())


@logtool.command("traces")
@click.argument("files", nargs=-1)
def traces(files: tuple[str, ...]) -> None:
    """Print the tracebacks (with the log line before each)."""
    Audit(on_trace=click.echo).run(_lines(files))


@logtool.command("errors")
@click.argument("files", nargs=-1)
def errors(files: tuple[str, ...]) -> None:
    """Print the log line of each task that did not succeed."""
    Audit(on_error=click.echo).run(_lines(files))


@logtool.command("incomplete")
@click.argument("files", nargs=-1)
def incomplete(files: tuple[str, ...]) -> None:
    """Print the ids of tasks received and never finished."""
    for task_id in Audit().run(_lines(files)).incomplete():
        click.echo(f"Did not complete: {task_id}")


@logtool.command("debug")
@click.argument("files", nargs=-1)
def debug(files: tuple[str, ...]) -> None:
    """Print the log lines that are not about a task's reception or end."""
    Audit(on_debug=click.echo).run(_lines(files))
