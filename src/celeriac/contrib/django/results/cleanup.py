"""Expiry of database results: the ``celery.backend_cleanup`` task and its daily entry.

As Celery's beat does for stores that do not expire entries themselves, an app
whose ``result_backend`` is ``django-db`` and ``result_expires`` is set gets the
task ``celery.backend_cleanup`` (Celery's name; it calls ``app.backend.cleanup()``)
and, unless ``beat_schedule`` already has it, the entry
``celery.backend_cleanup`` running it every day at 04:00 (expiring after 12 h).
``celeriac -A proj results cleanup`` does the same from the command line.
"""

from __future__ import annotations

from typing import Any

from celeriac.schedules import crontab

CLEANUP_TASK = "celery.backend_cleanup"
NEEDS_CLEANUP = ("django-db",)


def install_cleanup(app: Any) -> None:
    """Register the cleanup task and its periodic entry on ``app`` when it needs them."""
    backend = str(app.conf.get("result_backend") or "")
    if backend.split("://", 1)[0].lower() not in NEEDS_CLEANUP or not app.conf.result_expires:
        return
    if CLEANUP_TASK not in app._tasks:
        def backend_cleanup() -> int:
            store = app.backend
            return int(store.cleanup()) if store is not None else 0

        app.task(name=CLEANUP_TASK, ignore_result=True)(backend_cleanup)
    if CLEANUP_TASK not in app.conf.beat_schedule:
        app.conf.beat_schedule[CLEANUP_TASK] = {
            "task": CLEANUP_TASK, "schedule": crontab(minute="0", hour="4"),
            "options": {"expires": 12 * 3600}}
