"""``python manage.py celeriac worker|beat|call|...``: the celeriac CLI with this project.

Django's settings are already loaded and ``django.setup()`` has run; the app is
the one named with ``-A`` (passed through), else the setting ``CELERIAC_APP``
(``"proj"``, ``"proj.celery:app"``), else the app the settings package created
(the tutorial layout: ``proj/__init__.py`` imports ``proj/celery.py``), else
``<settings package>.celery``. Every argument after ``celeriac`` goes to the CLI
unchanged, so ``./manage.py celeriac worker -c 10 -l INFO`` is
``celeriac -A proj worker -c 10 -l INFO``.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from celeriac.app import state as _state
from celeriac.cli import main
from celeriac.cli.base import load_app


def find_app() -> Any:
    """The project's celeriac app (see the module docstring)."""
    name = getattr(settings, "CELERIAC_APP", None)
    if name:
        return load_app(str(name))
    apps = _state.all_apps()
    if apps:
        return _state.get_current_app()
    package = (os.environ.get("DJANGO_SETTINGS_MODULE") or "").rpartition(".")[0]
    if package:
        try:
            importlib.import_module(f"{package}.celery")
        except ModuleNotFoundError:
            pass
        if _state.all_apps():
            return _state.get_current_app()
    raise CommandError("no celeriac app found: create one in <project>/celery.py and import it "
                       "in <project>/__init__.py, set CELERIAC_APP, or pass -A")


class Command(BaseCommand):
    help = "Run the celeriac command line (worker, beat, call, ...) with this project's settings."

    def run_from_argv(self, argv: list[str]) -> None:
        args = list(argv[2:])
        if any(a in ("-A", "--app") or a.startswith("--app=") for a in args):
            main(args)
            return
        main(args, app=find_app())

    def handle(self, *args: Any, **options: Any) -> None:  # call_command() path
        try:
            main(list(args), app=find_app())
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise CommandError(f"celeriac exited with status {exc.code}") from None

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("args", nargs="*")
