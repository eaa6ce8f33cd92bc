"""The ``celery.ping`` task :func:`~celeriac.contrib.testing.worker.start_worker` sends to
check that the worker it started runs tasks (Celery's ``celery.contrib.testing.tasks``).

A ``shared_task``: importing this module registers it with every app, present and future.
"""

from __future__ import annotations

from ...app.registry import shared_task


@shared_task(name="celery.ping")
def ping() -> str:
    """Simple task that just returns 'pong'."""
    return "pong"
