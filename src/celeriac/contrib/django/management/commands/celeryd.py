"""``python manage.py celeryd -c 10``: django-celery's old worker command (Kuma's habit),
the same as ``python manage.py celeriac worker -c 10``; Kuma's documented spelling
``--log-level=DEBUG`` is read as ``--loglevel``."""

from __future__ import annotations

from .celeriac import Command as CeleriacCommand


def _old_spelling(arg: str) -> str:
    if arg == "--log-level" or arg.startswith("--log-level="):
        return "--loglevel" + arg[len("--log-level"):]
    return arg


class Command(CeleriacCommand):
    help = "Start a celeriac worker (django-celery's celeryd); same as 'celeriac worker'."

    def run_from_argv(self, argv: list[str]) -> None:
        args = [_old_spelling(arg) for arg in argv[2:]]
        super().run_from_argv([*argv[:2], "worker", *args])
