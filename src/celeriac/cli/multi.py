"""``celeriac multi``: start, stop and restart several named workers (Celery's ``multi``).

``celeriac multi start worker1 worker2 --app=proj -l INFO
--pidfile=/var/run/celeriac/%n.pid --logfile=/var/log/celeriac/%n%I.log``
starts one detached ``celeriac worker`` per node and reports each as ``OK`` once
its pidfile appears (``FAILED`` with the log's last lines otherwise). Node names
follow Celery: ``w1`` becomes ``w1@<host>``, a number ``3`` means ``celery1``
``celery2`` ``celery3``. In option values ``%n`` is the name part (``w1``),
``%h`` the node name (``w1@host``), ``%d`` the domain, and ``%I``/``%i`` the
pool process index (celeriac's pool children log to their node's file, so
they expand to ``""``/``0``). ``-c:w1 4`` or ``-Q:1-2 high`` set an option for
some nodes only (names, 1-based indexes, ranges). As in Celery, a short option the
worker does not know as a flag takes the next argument as its value unless it starts
with ``-`` (``-L:4,5 DEBUG``); arguments after ``--`` are passed to every worker.

``stop`` sends SIGTERM and waits for the nodes to exit (``stopwait`` waits
without a limit), ``kill`` sends SIGKILL, ``restart`` is stop-wait then start,
``show`` prints the worker command lines, ``names`` the node names, ``get NODE``
one node's command line, ``expand TEMPLATE`` the template for each node (``%n``...).
``stop``/``restart`` take a signal (``-KILL``, ``-INT``, ``-9``; default TERM).
``--range-prefix P`` names counted nodes ``P1``, ``P2``...; ``-q/--quiet`` prints
only failures, ``--nosplash`` leaves out the banner lines, ``--verbose`` prints
each worker command line as it starts; ``--no-color`` is accepted (no colors). A node whose
pidfile names a live process is not started again; stale pidfiles are removed.
Default files are ``%n.pid`` and ``%n%I.log`` in the current directory.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import click

from .daemon import alive, read_pid

STOP_TIMEOUT = 60.0
START_TIMEOUT = 30.0
VALUE_OPTIONS = {"-A", "--app", "-b", "--broker", "--result-backend", "-l", "--loglevel",
                 "-c", "--concurrency", "-P", "--pool", "-Q", "--queues", "-X",
                 "--exclude-queues", "--pidfile", "-f", "--logfile", "--prefetch-multiplier",
                 "--max-tasks-per-child", "--max-memory-per-child", "--time-limit",
                 "--soft-time-limit", "--autoscale", "--liveness-file", "--umask",
                 "--workdir", "-n", "--hostname", "-I", "--include", "-O", "--optimization",
                 "-S", "--statedb", "--scheduler", "-s", "--schedule-filename", "--schedule",
                 "--uid", "--gid", "--executable", "--heartbeat-interval",
                 "--pool-start-method", "--config", "--loader"}
#: options of the ``celeriac`` group, placed before ``worker`` (the flags take no value)
GLOBAL_OPTIONS = {"-A", "--app", "-b", "--broker", "--result-backend", "--workdir",
                  "--config", "--loader", "-C", "--skip-checks"}
#: short spellings of the value options, to match ``-Q:1-3 a`` against ``--queues b``
SAME = {"-A": "--app", "-b": "--broker", "-l": "--loglevel", "-c": "--concurrency",
        "-P": "--pool", "-Q": "--queues", "-X": "--exclude-queues", "-f": "--logfile",
        "-n": "--hostname", "-I": "--include", "-O": "--optimization", "-S": "--statedb",
        "-s": "--schedule-filename"}
#: the worker's and the ``celeriac`` group's short options that take no value; any other
#: short option takes the next argument as its value unless it starts with ``-``, as in
#: Celery (``-L:4,5 DEBUG``)
SHORT_FLAGS = {"-B", "-D", "-E", "-C", "-q", "-h"}
#: ``multi``'s own flags (Celery's reserved options), taken out before the nodes' options
RESERVED = {"--nosplash", "--quiet", "-q", "--verbose", "--no-color"}


@dataclass
class Node:
    name: str
    index: int
    options: list[tuple[str, str | None]] = field(default_factory=list)
    #: the arguments after ``--``, passed to every worker after its options (as Celery)
    passthrough: list[str] = field(default_factory=list)

    @property
    def short(self) -> str:
        return self.name.split("@", 1)[0]

    def expand(self, value: str) -> str:
        host = self.name.split("@", 1)[1]
        domain = host.partition(".")[2]
        return (value.replace("%n", self.short).replace("%h", self.name)
                .replace("%d", domain).replace("%I", "").replace("%i", "0"))

    def option(self, *names: str) -> str | None:
        for key, value in reversed(self.options):
            if key in names:
                return self.expand(value or "")
        return None

    @property
    def pidfile(self) -> str:
        return os.path.abspath(self.option("--pidfile") or self.expand("%n.pid"))

    @property
    def logfile(self) -> str:
        return os.path.abspath(self.option("-f", "--logfile") or self.expand("%n%I.log"))

    def argv(self) -> list[str]:
        before: list[str] = []
        after = ["worker", "-n", self.name, "--detach",
                             f"--pidfile={self.pidfile}", f"--logfile={self.logfile}"]
        for key, value in self.options:
            if key in ("--pidfile", "-f", "--logfile", "-n", "--hostname", "--detach", "-D"):
                continue
            target = before if key in GLOBAL_OPTIONS else after
            target += [key] if value is None else [key, self.expand(value)]
        tail = ["--", *self.passthrough] if self.passthrough else []
        return [sys.executable, "-m", "celeriac", *before, *after, *tail]


def _selects(selector: str, node_name: str, index: int) -> bool:
    own = (node_name, node_name.split("@", 1)[0], str(index))
    for part in selector.split(","):
        if "-" in part and all(p.isdigit() for p in part.split("-", 1)):
            low, high = (int(p) for p in part.split("-", 1))
            if low <= index <= high:
                return True
        elif part in own:
            return True
    return False


def parse(args: list[str], app: str | None = None) -> list[Node]:
    """Node names and per-node options from ``multi``'s arguments (Celery's syntax)."""
    host = socket.gethostname()
    prefix = "celery"
    names: list[str] = []
    options: list[tuple[str, str | None, str | None]] = []  # (key, selector, value)
    passthrough: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            passthrough = args[i + 1:]
            break
        if not arg.startswith("-") or arg == "-":
            names.append(arg)
            i += 1
            continue
        key, eq, value = arg.partition("=")
        base, colon, selector = key.partition(":")
        if base == "--range-prefix":
            if not eq and i + 1 < len(args):
                value, i = args[i + 1], i + 1
            prefix, i = value, i + 1
            continue
        has_value = bool(eq)
        if not eq and i + 1 < len(args) and (base in VALUE_OPTIONS or (
                not base.startswith("--") and base not in SHORT_FLAGS
                and not args[i + 1].startswith("-"))):
            value, i, has_value = args[i + 1], i + 1, True
        options.append((base, selector if colon else None, value if has_value else None))
        i += 1
    if len(names) == 1 and names[0].isdigit():
        names = [f"{prefix}{n}" for n in range(1, int(names[0]) + 1)]
    if not names:
        raise click.UsageError("give node names (e.g. `multi start w1 w2`) or a count")
    if app and not any(k in ("-A", "--app") for k, _, _ in options):
        options.insert(0, ("--app", None, app))
    nodes = []
    for index, name in enumerate(names, start=1):
        full = name.replace("%h", host) if "@" in name else f"{name}@{host}"
        node = Node(full, index, passthrough=list(passthrough))
        mine = [(k, sel, v) for k, sel, v in options if sel is None or _selects(sel, full, index)]
        # as Celery: an option given for this node (-Q:1-3) replaces the general one (-Q)
        own = {SAME.get(k, k) for k, sel, _ in mine if sel is not None}
        node.options = [(k, v) for k, sel, v in mine
                        if sel is not None or SAME.get(k, k) not in own]
        nodes.append(node)
    return nodes


def _start(node: Node) -> bool:
    pid = read_pid(node.pidfile)
    if pid is not None and alive(pid):
        say(f"\t> {node.name}: already running (pid {pid})")
        return True
    if "--verbose" in click.get_current_context().meta.get("multi.flags", set()):
        say(f"\t> {node.name}: {shlex.join(node.argv())}")
    result = subprocess.run(node.argv(), capture_output=True, text=True)
    deadline = time.monotonic() + START_TIMEOUT
    while result.returncode == 0 and time.monotonic() < deadline:
        pid = read_pid(node.pidfile)
        if pid is not None and alive(pid):
            say(f"\t> {node.name}: OK")
            return True
        time.sleep(0.1)
    click.echo(f"\t> {node.name}: FAILED", err=True)
    detail = (result.stderr or "").strip() or _tail(node.logfile)
    if detail:
        click.echo("\n".join(f"\t  {line}" for line in detail.splitlines()[-10:]), err=True)
    return False


def _tail(path: str) -> str:
    try:
        with open(path, errors="replace") as fh:
            return fh.read()[-2000:]
    except OSError:
        return ""


def _signal(nodes: list[Node], sig: int, wait: float | None) -> bool:
    """Signal every node; with ``wait`` (None: forever), wait for them to exit."""
    running = []
    for node in nodes:
        pid = read_pid(node.pidfile)
        if pid is None or not alive(pid):
            say(f"\t> {node.name}: DOWN")
            if pid is not None:
                os.unlink(node.pidfile)
            continue
        os.kill(pid, sig)
        say(f"\t> Sending {signal.Signals(sig).name} to {node.name} (pid {pid})")
        running.append((node, pid))
    if not running or wait == 0:
        return True
    say(f"> Waiting for {len(running)} node{'s' if len(running) != 1 else ''}...")
    deadline = None if wait is None else time.monotonic() + wait
    while running:
        running = [(n, p) for n, p in running if alive(p)]
        if deadline is not None and time.monotonic() > deadline:
            for node, pid in running:
                click.echo(f"\t> {node.name}: still running (pid {pid})", err=True)
            return False
        time.sleep(0.1)
    for node in nodes:
        say(f"\t> {node.name}: DOWN")
    return True


@click.command(context_settings={"ignore_unknown_options": True,
                                 "allow_interspersed_args": False})
@click.argument("action", type=click.Choice(["start", "stop", "stopwait", "restart", "kill",
                                             "show", "names", "get", "expand", "help"]))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def multi(ctx: click.Context, action: str, args: tuple[str, ...]) -> None:
    """Start, stop or restart several workers in the background."""
    ctx.meta["multi.flags"] = {a for a in args if a in RESERVED}
    rest = [a for a in args if a not in RESERVED]
    if action == "help":
        click.echo(ctx.get_help() + "\n\n" + (__doc__ or "").split("\n\n", 1)[1])
        return
    first = rest.pop(0) if action in ("get", "expand") and rest else None
    if action in ("get", "expand") and first is None:
        what = "node" if action == "get" else "template"
        raise click.UsageError(f"multi {action}: give the {what}")
    sig = signal_argument(rest) if action in ("stop", "stopwait", "restart") else None
    rest = [a for a in rest if sig is None or signal_argument([a]) is None]
    nodes = parse(rest, getattr(ctx.obj, "app_name", None))
    if action == "get":
        found = [n for n in nodes if first in (n.name, n.short)]
        if not found:
            raise click.exceptions.Exit(1)
        click.echo(shlex.join(found[0].argv()))
    elif action == "expand":
        click.echo("\n".join(n.expand(first or "") for n in nodes))
    elif action == "names":
        click.echo("\n".join(n.name for n in nodes))
    elif action == "show":
        click.echo("\n".join(shlex.join(n.argv()) for n in nodes))
    elif action == "start":
        say("> Starting nodes...", splash=True)
        if not all([_start(node) for node in nodes]):
            raise click.exceptions.Exit(1)
    elif action in ("stop", "stopwait", "kill"):
        sig = signal.SIGKILL if action == "kill" else sig or signal.SIGTERM
        wait = {"stop": STOP_TIMEOUT, "stopwait": None, "kill": 0.0}[action]
        say("> Stopping nodes..." if action != "kill" else "> Killing nodes...", splash=True)
        if not _signal(nodes, sig, wait):
            raise click.exceptions.Exit(1)
    else:  # restart
        say("> Restarting nodes...", splash=True)
        _signal(nodes, sig or signal.SIGTERM, None)
        if not all([_start(node) for node in nodes]):
            raise click.exceptions.Exit(1)


def signal_argument(args: list[str]) -> int | None:
    """The signal named among ``stop``'s arguments (``-KILL``, ``-SIGINT``, ``-9``), if any."""
    for arg in reversed(args):
        if not arg.startswith("-") or arg.startswith("--"):
            continue
        name = arg[1:]
        if name.isdigit():
            return int(name)
        try:
            return int(signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
        except KeyError:
            continue
    return None


def say(text: str, splash: bool = False) -> None:
    """Progress output: none with ``-q/--quiet``; no banner line with ``--nosplash``."""
    flags = click.get_current_context().meta.get("multi.flags", set())
    if {"-q", "--quiet"} & flags or (splash and "--nosplash" in flags):
        return
    click.echo(text)
