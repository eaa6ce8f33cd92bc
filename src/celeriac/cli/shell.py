"""``celeriac shell`` and ``celeriac report``: an interactive session with the app, and the
bug-report text (Celery's commands of the same names).

``shell`` opens IPython, else bpython, else Python's own console (``-I``,
``-B``, ``--python`` choose one; a chosen shell that is not installed is an
error, not a fallback) with ``app``/``celery`` (the app), ``Task``, the canvas
primitives (``chord``, ``group``, ``chain``, ``chunks``, ``xmap``, ``xstarmap``,
``subtask``, ``signature``) and every task by its function name (``-T``: none).
Celery's ``--eventlet``/``--gevent`` are refused: celeriac has no green threads.
"""

from __future__ import annotations

import code
from typing import Any

import click

from ..app.report import bugreport
from .base import CLIContext


def shell_locals(app: Any, with_tasks: bool = True) -> dict[str, Any]:
    """What the session starts with."""
    import celeriac

    names = ("Task", "chord", "group", "chain", "chunks", "xmap", "xstarmap", "subtask",
             "signature")
    found: dict[str, Any] = {"app": app, "celery": app}
    found.update({name: getattr(celeriac, name) for name in names})
    if with_tasks:
        for task in app.tasks.values():
            if task.name.startswith("celery."):
                continue
            found[getattr(task, "__name__", None) or task.name.rsplit(".", 1)[-1]] = task
    return found


def python_shell(names: dict[str, Any]) -> None:
    try:
        import readline
        import rlcompleter
    except ImportError:
        pass
    else:
        readline.set_completer(rlcompleter.Completer(names).complete)
        readline.parse_and_bind("tab:complete")
    code.interact(local=names, banner=f"celeriac shell: {', '.join(sorted(names))}",
                  exitmsg="")


def ipython_shell(names: dict[str, Any]) -> None:
    from IPython import start_ipython

    start_ipython(argv=[], user_ns=names)


def bpython_shell(names: dict[str, Any]) -> None:
    import bpython

    bpython.embed(names)


@click.command("shell")
@click.option("-I", "--ipython", is_flag=True, help="Use IPython.")
@click.option("-B", "--bpython", is_flag=True, help="Use bpython.")
@click.option("--python", is_flag=True, help="Use Python's own console.")
@click.option("-T", "--without-tasks", is_flag=True, help="Do not add the tasks to the names.")
@click.option("--eventlet", is_flag=True, help="Refused: celeriac has no green threads.")
@click.option("--gevent", is_flag=True, help="Refused: celeriac has no green threads.")
@click.pass_obj
def shell(obj: CLIContext, ipython: bool, bpython: bool, python: bool, without_tasks: bool,
          eventlet: bool, gevent: bool) -> None:
    """Start a shell with the app, the canvas primitives and the tasks loaded."""
    if eventlet or gevent:
        raise click.UsageError(f"--{'eventlet' if eventlet else 'gevent'}: celeriac has no "
                               f"green-thread support; the shell runs without it")
    names = shell_locals(obj.app, with_tasks=not without_tasks)
    if python:
        return python_shell(names)
    chosen = "ipython" if ipython else "bpython" if bpython else None
    for name, run in (("ipython", ipython_shell), ("bpython", bpython_shell)):
        if chosen in (None, name):
            try:
                return run(names)
            except ImportError:
                if chosen == name:
                    raise click.ClickException(f"{name} is not installed "
                                               f"(pip install {name})") from None
    python_shell(names)


@click.command("report")
@click.pass_obj
def report(obj: CLIContext) -> None:
    """Print versions, platform and the app's settings (secrets masked) for a bug report."""
    app = obj.app
    app.finalize()
    click.echo(bugreport(app))
