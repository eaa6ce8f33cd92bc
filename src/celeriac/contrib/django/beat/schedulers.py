"""``DatabaseScheduler``: celeriac's beat on django-celery-beat's tables.

``celeriac -A proj beat --scheduler celeriac.contrib.django.beat.schedulers:DatabaseScheduler``
(or ``beat_scheduler`` / ``CELERY_BEAT_SCHEDULER`` naming it; the old
``django_celery_beat.schedulers:DatabaseScheduler`` path maps here). It is
celeriac's :class:`~celeriac.beat.scheduler.Scheduler` with the
:class:`~.store.DjangoScheduleStore`: entries are ``PeriodicTask`` rows (admin
edits are seen within one tick), ``beat_schedule`` entries are synced into the
table at start, every fire is claimed in the database, so any number of beats
may run, and each message carries django-celery-beat's ``periodic_task_name``
header.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from celeriac.beat.scheduler import Scheduler
from celeriac.schedules.entries import StoredEntry
from celeriac.schedules.store import ScheduleStore

from ..fixup import django_setup
from .store import DjangoScheduleStore, with_task_name


def store_url(app: Any) -> str:
    """The Django store URL: ``beat_schedule_store`` if it names one, else ``django://``."""
    configured = str(app.conf.get("beat_schedule_store") or "")
    return configured if configured.startswith("django://") else "django://"


class DatabaseScheduler(Scheduler):
    """The beat scheduler whose schedule store is the Django database."""

    def __init__(self, app: Any, store: ScheduleStore | None = None, **kwargs: Any) -> None:
        owns = store is None
        super().__init__(app, store or DjangoScheduleStore(store_url(app), app=app), **kwargs)
        self._owns_store = owns

    def setup(self) -> None:
        django_setup()
        super().setup()

    def fire(self, entry: StoredEntry, fire_time: datetime, now: datetime) -> bool:
        return super().fire(with_task_name(entry), fire_time, now)
