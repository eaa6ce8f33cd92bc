"""The ``pshell`` helper: look at the task queues from the application's shell.

In the ini file (Pyramid's ``[pshell]`` section)::

    [pshell]
    setup = celeriac.contrib.pyramid.shell.setup

then ``pshell development.ini`` (Websauna's ``ws-shell``) starts with:

* ``celery_app``: the app bound to this application's registry;
* ``queues()``: ``{queue: {"ready", "delayed", "leased", "dead"}}`` for every
  known queue (delayed = waiting for their ``countdown``/``eta`` in the broker:
  what Celery's ``inspect().scheduled()`` shows workers holding);
* ``inspect``: ``celery_app.control.inspect`` (``inspect().active()``,
  ``.scheduled()``, ...), when the app's control API offers it;
* ``purge(queue=None)``: delete the waiting messages of a queue (default: all
  known queues), as ``celeriac worker --purge`` does before starting.
"""

from __future__ import annotations

from typing import Any

from .app import celery_app
from .commit import _APPS


def app_for(registry: Any) -> Any:
    """The celeriac app bound to ``registry`` (``celery_app`` when none is)."""
    for app in list(_APPS):
        if app.conf.get("PYRAMID_REGISTRY") is registry:
            return app
    return celery_app


def queue_counts(app: Any) -> dict[str, dict[str, int]]:
    """Counts per known queue (the default queue always included)."""
    broker = app.broker
    names = sorted({*broker.queues(), str(app.conf.task_default_queue)})
    out: dict[str, dict[str, int]] = {}
    for name in names:
        stats = broker.stats(name)
        out[name] = {"ready": stats.ready, "delayed": stats.delayed, "leased": stats.leased,
                     "dead": stats.dead}
    return out


def purge_queues(app: Any, queue: str | None = None) -> int:
    """Delete the waiting messages of ``queue`` (default: every known queue)."""
    names = [queue] if queue else list(queue_counts(app))
    return sum(app.broker.purge(name) for name in names)


def setup(env: dict[str, Any]) -> None:
    """pshell's ``setup`` hook: add the queue helpers to the shell's variables."""
    app = app_for(env.get("registry"))
    env["celery_app"] = app
    env["queues"] = lambda: queue_counts(app)
    env["purge"] = lambda queue=None: purge_queues(app, queue)
    inspect = getattr(getattr(app, "control", None), "inspect", None)
    if inspect is not None:
        env["inspect"] = inspect
