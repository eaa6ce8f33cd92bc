"""Options an app adds to the command line (Celery's ``app.user_options``), and ``-A`` after
the subcommand.

Celery lets an app (or an integration such as pyramid_celery) add options to
every command: ``app.user_options["preload"].add(click.Option(("--ini",)))``.
They are parsed with the subcommand's own options and, before the command runs,
sent to :data:`celeriac.signals.user_preload_options` (``app=``, ``options=``,
a dict by option name), where the integration reads its configuration. A
receiver that raises stops the command with its message (Celery only logs it
and goes on with a half-configured app).

``-A``/``--app`` is also accepted after the subcommand (``celeriac worker -A
proj``), as Celery 4 and the ``ws-celery``/pyramid_celery command lines write
it; Celery 5 refuses that form.

``user_options["worker"]`` and ``["beat"]`` feed Celery's bootsteps, which
celeriac does not have: options found there are refused at start-up, naming them.
"""

from __future__ import annotations

import copy
import functools
from typing import TYPE_CHECKING, Any

import click

from .. import signals

if TYPE_CHECKING:
    from .base import CLIContext

#: Commands that take the app's options (every top-level command does; groups take
#: them before their own subcommand, as in Celery)
APP_OPTIONS = ("-A", "--app")


def split_app_option(args: list[str]) -> tuple[str | None, list[str]]:
    """``(app, rest)``: the ``-A``/``--app`` value found among a subcommand's ``args``."""
    found: str | None = None
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg in APP_OPTIONS:
            if i + 1 >= len(args):
                raise click.UsageError(f"Option '{arg}' requires an argument.")
            found = args[i + 1]
            i += 2
            continue
        if arg.startswith("--app="):
            found = arg.split("=", 1)[1]
        elif arg.startswith("-A") and len(arg) > 2:
            found = arg[2:]
        else:
            rest.append(arg)
        i += 1
    return found, rest


def prepare(obj: CLIContext, name: str, command: click.Command, args: list[str]
            ) -> tuple[click.Command, list[str]]:
    """The command to run for ``name`` with the app's user options, and its arguments."""
    app_name, rest = split_app_option(args)
    if app_name is not None:
        if obj.app_name and obj.app_name != app_name and obj._app is None:
            raise click.UsageError(f"-A given twice: {obj.app_name!r} and {app_name!r}")
        if obj._app is None:
            obj.app_name = app_name
    if not obj.app_name and obj._app is None:
        return command, rest  # the default app: nothing was added to it
    user_options = getattr(obj.app, "user_options", None) or {}
    unsupported = [opt for key in ("worker", "beat") if key == name
                   for opt in user_options.get(key, ())]
    if unsupported:
        names = ", ".join(sorted(str(getattr(o, "name", o)) for o in unsupported))
        raise click.UsageError(
            f"app.user_options[{name!r}] ({names}) configure Celery bootsteps, which celeriac "
            f"does not have; use user_options['preload'] and the user_preload_options signal")
    preload = [opt for opt in user_options.get("preload", ()) if isinstance(opt, click.Parameter)]
    if not preload or command.callback is None:
        return command, rest
    wrapped = copy.copy(command)  # the registered command stays as it is
    wrapped.params = [*command.params, *preload]
    wrapped.callback = _sending(obj, command.callback, preload)
    return wrapped, rest


def _sending(obj: CLIContext, callback: Any, preload: list[click.Parameter]) -> Any:
    names = [p.name for p in preload if p.name]

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        values = {n: kwargs.pop(n) for n in names if n in kwargs}
        for _receiver, outcome in signals.user_preload_options.send(
                sender=callback, app=obj.app, options=values):
            if isinstance(outcome, Exception):
                if isinstance(outcome, click.ClickException):
                    raise outcome
                raise click.ClickException(f"{outcome}") from outcome
        return callback(*args, **kwargs)

    return run
