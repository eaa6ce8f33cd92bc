"""What every ``celeriac`` command shares: the app named by ``-A`` and clear errors.

:class:`CLIContext` is the click context object (``obj``); :func:`load_app`
finds the app for ``-A`` (``proj``, ``proj.celery``, ``proj:app``,
``proj.celery:app``, ``proj.celery.app``); :class:`ErrorHandlingGroup` turns configuration and
connection errors into one line and exit status 1, no traceback.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

import click

from ..app.base import Celery
from ..app.state import get_current_app
from ..exceptions import CeleriacError, ImproperlyConfigured, OperationalError


@dataclass
class CLIContext:
    """What every subcommand gets as ``ctx.obj``."""

    app_name: str | None
    broker: str | None
    result_backend: str | None
    _app: Celery | None = None
    #: ``-q/--quiet``: no banner or ready line (worker, beat), fewer messages
    quiet: bool = False
    #: ``--config``: a module whose settings are loaded into the app
    config_module: str | None = None

    @property
    def app(self) -> Celery:
        if self._app is None:
            self._app = load_app(self.app_name)
            if self.config_module:
                try:
                    self._app.config_from_object(self.config_module)
                except ImportError as exc:
                    raise click.ClickException(f"--config {self.config_module}: cannot "
                                               f"import it: {exc}") from None
                os.environ["CELERIAC_CONFIG_MODULE"] = self.config_module  # spawned children
            if self.broker:
                self._app.conf.broker_url = self.broker
            if self.result_backend:
                self._app.conf.result_backend = self.result_backend
        return self._app


#: ``--loader`` values naming Celery's own loaders, whose work celeriac's app does itself
CELERY_LOADERS = frozenset({"default", "app", "celery.loaders.default:Loader",
                            "celery.loaders.default.Loader", "celery.loaders.app:AppLoader",
                            "celery.loaders.app.AppLoader"})


def check_loader(loader: str | None) -> None:
    """``--loader``: Celery's default and app loaders are accepted; any other is refused."""
    if loader and loader not in CELERY_LOADERS:
        raise click.UsageError(
            f"--loader {loader}: celeriac has no custom loaders (Celery's default and app "
            f"loaders are accepted); load settings with --config MODULE or "
            f"app.config_from_object()")


def top_level_context(ctx: click.Context) -> CLIContext:
    """The ``obj`` of the ``celeriac`` group, made from its options once (``--workdir``
    applied first, so ``-A`` imports from there).

    As Celery's: ``--config`` is also ``$CELERY_CONFIG_MODULE``, ``--skip-checks``
    ``$CELERY_SKIP_CHECKS`` (the Django fix-up reads it); ``-C/--no-color`` sets
    ``$NO_COLOR`` (the only colors are the events view's)."""
    if not ctx.meta.get("celeriac.workdir_applied"):
        ctx.meta["celeriac.workdir_applied"] = True
        if ctx.params.get("workdir"):
            os.chdir(ctx.params["workdir"])
    check_loader(ctx.params.get("loader"))
    if os.environ.get("SKIP_CHECKS"):  # Celery's documented rule (its click option refuses
        ctx.params["skip_checks"] = True  # values that are not booleans)
    for flag, name, value in (("config_module", "CELERY_CONFIG_MODULE", None),
                              ("skip_checks", "CELERY_SKIP_CHECKS", "true"),
                              ("no_color", "NO_COLOR", "1")):
        if ctx.params.get(flag):
            os.environ[name] = value or str(ctx.params[flag])
    broker, backend = ctx.params.get("broker"), ctx.params.get("result_backend")
    # as Celery's -b/--result-backend: through the environment, so they beat
    # $CELERY_BROKER_URL (which beats the app's own broker=) and reach child processes
    for value, names in ((broker, ("CELERIAC_BROKER_URL", "CELERY_BROKER_URL")),
                         (backend, ("CELERIAC_RESULT_BACKEND", "CELERY_RESULT_BACKEND"))):
        for name in names if value else ():
            os.environ[name] = str(value)
    if ctx.obj is None:
        ctx.obj = CLIContext(ctx.params.get("app_name"), broker, backend)
    obj: CLIContext = ctx.obj
    obj.quiet = bool(ctx.params.get("quiet")) or obj.quiet
    obj.config_module = ctx.params.get("config_module") or obj.config_module
    return obj


def load_app(name: str | None) -> Celery:
    """Find the app for ``-A``: ``proj``, ``proj.celery``, ``proj:app``, ``proj.celery:app``
    or, as Celery accepts too, ``proj.celery.app`` (a dotted path ending in the app)."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if not name:
        return get_current_app()
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if not (exc.name and module_name.startswith(exc.name)):
            raise
        # ``proj.celery.app``: a module attribute written with a dot, as Celery allows
        parent, _, tail = module_name.rpartition(".")
        if attr or not parent or exc.name != module_name:
            raise click.ClickException(
                f"Unable to load celeriac application. The module {module_name} was not "
                f"found.") from None
        module_name, attr = parent, tail
        module = importlib.import_module(module_name)
    if attr:
        app = getattr(module, attr, None)
        if not isinstance(app, Celery):
            raise click.ClickException(f"{name} is not a Celery application")
        return app
    found = _find_app(module)
    if found is None:
        try:
            sub = importlib.import_module(f"{module_name}.celery")
            found = _find_app(sub)
        except ModuleNotFoundError:
            found = None
    if found is None:
        raise click.ClickException(
            f"Unable to load celeriac application: no Celery app found in {module_name} "
            f"(use -A module:attribute)")
    return found


def _find_app(module: Any) -> Celery | None:
    for attr in ("app", "celery", "celery_app"):
        candidate = getattr(module, attr, None)
        if isinstance(candidate, Celery):
            return candidate
    for value in vars(module).values():
        if isinstance(value, Celery):
            return value
    return None


class ErrorHandlingGroup(click.Group):
    """Turns configuration and connection errors into one clear line; the top-level group
    also gives each command the app's user options (:mod:`.preload`)."""

    def resolve_command(self, ctx: click.Context, args: list[str]
                        ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if ctx.parent is None and command is not None and name:
            from .preload import prepare

            command, rest = prepare(top_level_context(ctx), name, command, rest)
        return name, command, rest

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ImproperlyConfigured, OperationalError, CeleriacError) as exc:
            raise click.ClickException(str(exc)) from None


def known_queues(app: Celery) -> list[str]:
    """The app's task queues, as Celery's ``app.amqp.queues``: those ``task_queues``
    declares, else ``task_default_queue`` (``purge`` and ``migrate`` default to them)."""
    from ..brokers.declared import queue_specs

    declared = list(queue_specs(app.conf.get("task_queues")))
    return declared or [app.conf.task_default_queue]


def comma_list(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def json_arg(value: str | None, what: str, kind: type) -> Any:
    if not value:
        return kind()
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise click.ClickException(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(parsed, kind):
        raise click.ClickException(f"{what} must be a JSON {kind.__name__}")
    return parsed
