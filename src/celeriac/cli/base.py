"""What every ``celeriac`` command shares: the app named by ``-A`` and clear errors.

:class:`CLIContext` is the click context object (``obj``); :func:`load_app`
finds the app for ``-A`` (``proj``, ``proj.celery``, ``proj:app``,
``proj.celery:app``); :class:`ErrorHandlingGroup` turns configuration and
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

    @property
    def app(self) -> Celery:
        if self._app is None:
            self._app = load_app(self.app_name)
            if self.broker:
                self._app.conf.broker_url = self.broker
            if self.result_backend:
                self._app.conf.result_backend = self.result_backend
        return self._app


def top_level_context(ctx: click.Context) -> CLIContext:
    """The ``obj`` of the ``celeriac`` group, made from its options once (``--workdir``
    applied first, so ``-A`` imports from there)."""
    if not ctx.meta.get("celeriac.workdir_applied"):
        ctx.meta["celeriac.workdir_applied"] = True
        if ctx.params.get("workdir"):
            os.chdir(ctx.params["workdir"])
    if ctx.obj is None:
        ctx.obj = CLIContext(ctx.params.get("app_name"), ctx.params.get("broker"),
                             ctx.params.get("result_backend"))
    obj: CLIContext = ctx.obj
    return obj


def load_app(name: str | None) -> Celery:
    """Find the app for ``-A``: ``proj``, ``proj.celery``, ``proj:app`` or ``proj.celery:app``."""
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
