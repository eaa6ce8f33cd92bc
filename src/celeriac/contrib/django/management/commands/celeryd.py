"""``python manage.py celeryd -c 10``: django-celery's old worker command (Kuma's habit),
the same as ``python manage.py celeriac worker -c 10``."""

from __future__ import annotations

from .celeriac import Command as CeleriacCommand


class Command(CeleriacCommand):
    help = "Start a celeriac worker (django-celery's celeryd); same as 'celeriac worker'."

    def run_from_argv(self, argv: list[str]) -> None:
        super().run_from_argv([*argv[:2], "worker", *argv[2:]])
