"""The Django fix-up: ``django.setup()`` at the right moment and database hygiene in workers.

Every app calls :func:`fixup` when it is created (``celeriac.app.base.BUILTIN_FIXUPS``);
it does nothing unless ``DJANGO_SETTINGS_MODULE`` is set and Django is importable.
Then, as Celery's ``celery.fixups.django``:

* ``import_modules`` (sent by ``app.finalize()`` before task modules are
  imported: worker, beat, prefork children started with ``spawn``) calls
  ``django.setup()`` unless Django's app registry is ready or loading;
* ``worker_init`` (the worker's main process, before pools start) runs Django's
  system checks (unless ``CELERY_SKIP_CHECKS`` is set) and closes database
  connections and caches, so forked children never share a socket;
* ``worker_process_init`` (each prefork child) forgets any inherited connection
  without network I/O;
* ``task_prerun`` / ``task_postrun`` close connections that errored or outlived
  ``CONN_MAX_AGE`` (Django's ``close_old_connections``, sparing a transaction
  still open) and close caches after the task, in the thread that ran the task;
  eager calls are left alone;
* ``beat_init`` / ``beat_embedded_init`` close connections inherited by beat;
* ``worker_ready`` starts the outbox relay thread when ``task_outbox`` and
  ``worker_outbox_relay`` are on; ``worker_shutdown`` stops it.

``async def`` tasks reach the ORM through Django's async API (``await
Model.objects.aget(...)``) or ``sync_to_async``; those connections belong to the
task's context and are released when it ends (Django's rule for async code:
``CONN_MAX_AGE`` applies to sync code only). Receivers only act for their own app.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from typing import Any

from celeriac import hooks, signals

from . import db, outbox
from .results.cleanup import install_cleanup

logger = logging.getLogger("celeriac.contrib.django")

ERR_NOT_INSTALLED = ("Environment variable DJANGO_SETTINGS_MODULE is defined but Django "
                     "is not installed: the Django fix-ups are not applied "
                     "(pip install 'celeriac[django]').")


def fixup(app: Any, env: str = "DJANGO_SETTINGS_MODULE") -> DjangoFixup | None:
    """Install the Django fix-up on ``app`` if ``$DJANGO_SETTINGS_MODULE`` is set."""
    if not os.environ.get(env):
        return None
    try:
        import django  # noqa: F401
    except ImportError:
        warnings.warn(ERR_NOT_INSTALLED, stacklevel=3)
        return None
    return DjangoFixup(app).install()


def _app_of(sender: Any) -> Any:
    return getattr(sender, "app", None) or getattr(sender, "_app", None)


class DjangoFixup:
    """Connects the Django fix-ups of one app to celeriac's signals."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.relay: Any = None
        self._relay_stop = threading.Event()
        self.worker_installed = False
        self.task_hooks = False

    def install(self) -> DjangoFixup:
        cwd = os.getcwd()
        if cwd not in sys.path:  # the project directory, as Celery (manage.py's directory)
            sys.path.insert(0, cwd)
        install_hooks()
        signals.import_modules.connect(self.on_import_modules, sender=self.app)
        signals.worker_init.connect(self.on_worker_init)
        signals.beat_init.connect(self.on_beat_init)
        signals.beat_embedded_init.connect(self.on_beat_init)
        # prefork children started with spawn never see worker_init: install from here too
        signals.worker_process_init.connect(self.on_worker_process_init)
        self.app.on_after_configure.connect(self.on_after_configure, sender=self.app)
        return self

    # -- start-up ----------------------------------------------------------------------
    def on_import_modules(self, sender: Any = None, **kwargs: Any) -> None:
        """``django.setup()`` before task modules are imported."""
        django_setup()

    def on_after_configure(self, sender: Any = None, **kwargs: Any) -> None:
        install_cleanup(self.app)

    def on_beat_init(self, sender: Any = None, **kwargs: Any) -> None:
        if _app_of(sender) is self.app:
            django_setup()
            db.close_all_connections()

    def on_worker_init(self, sender: Any = None, **kwargs: Any) -> None:
        if _app_of(sender) is not self.app or self.worker_installed:
            return
        self.worker_installed = True
        django_setup()
        if not os.environ.get("CELERY_SKIP_CHECKS"):
            from django.core.checks import run_checks

            for message in run_checks():
                if message.is_serious():
                    logger.error("Django system check: %s", message)
        self._install_task_hooks()
        signals.worker_ready.connect(self.on_worker_ready)
        signals.worker_shutdown.connect(self.on_worker_shutdown)
        db.close_all_connections()
        db.close_caches()

    def _install_task_hooks(self) -> None:
        if self.task_hooks:
            return
        self.task_hooks = True
        signals.task_prerun.connect(self.on_task_prerun)
        signals.task_postrun.connect(self.on_task_postrun)

    # -- in the worker -------------------------------------------------------------------
    def _mine(self, task: Any) -> bool:
        """A task of this app run by a worker thread (not eagerly, not on an event loop,
        where connections belong to the task's context: see the module docstring)."""
        return (_app_of(task) is self.app and not getattr(task.request, "is_eager", False)
                and not db._in_event_loop())

    def on_worker_process_init(self, **kwargs: Any) -> None:
        django_setup()  # a no-op after fork; spawned children may not be set up yet
        db.drop_inherited_connections()
        db.close_caches()
        self._install_task_hooks()

    def on_task_prerun(self, sender: Any = None, **kwargs: Any) -> None:
        if sender is not None and self._mine(sender):
            db.close_old_connections()

    def on_task_postrun(self, sender: Any = None, **kwargs: Any) -> None:
        if sender is not None and self._mine(sender):
            db.close_old_connections()
            db.close_caches()

    def on_worker_ready(self, sender: Any = None, **kwargs: Any) -> None:
        conf = self.app.conf
        if _app_of(sender) is not self.app or self.relay is not None:
            return
        if not (conf.get("task_outbox") and conf.get("worker_outbox_relay", True)):
            return
        self._relay_stop.clear()
        self.relay = outbox.Relay(self.app)
        thread = threading.Thread(target=self.relay.run, args=(self._relay_stop,),
                                  name="celeriac-outbox-relay", daemon=True)
        thread.start()
        logger.info("outbox: relay started (database %r)", self.relay.alias)

    def on_worker_shutdown(self, sender: Any = None, **kwargs: Any) -> None:
        if _app_of(sender) is self.app:
            self._relay_stop.set()
            self.relay = None


def install_hooks() -> None:
    """Plug Django into celeriac's extension points (:mod:`celeriac.hooks`), idempotent:
    ``transaction.on_commit`` for ``Task.delay_on_commit``, the outbox publish
    interceptor and the worker's outbox de-duplication check. Called by the fix-up
    and by ``CeleriacConfig.ready()``."""
    # imported only once Django is in use: it registers the django.tasks runner as a
    # shared task, which apps without Django must not get
    from . import runner  # noqa: F401

    hooks.register_on_commit(db.on_commit)
    hooks.register_publish_interceptor(outbox.intercept)
    hooks.register_admission_check(outbox.admit)


def django_setup() -> None:
    """``django.setup()`` unless the app registry is ready or being populated."""
    from django.apps import apps

    import django

    if apps.ready or apps.loading:
        return
    django.setup()
