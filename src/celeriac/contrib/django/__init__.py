"""celeriac for Django: one package for what Celery spreads over three.

* the **fix-up** (:mod:`.fixup`): with ``DJANGO_SETTINGS_MODULE`` set, workers and
  beats call ``django.setup()`` before task modules are imported and close stale
  database connections around each task (as ``celery.fixups.django`` does);
* ``Task.delay_on_commit`` / ``apply_async_on_commit`` (:mod:`.db`) and the
  **transactional outbox** (:mod:`.outbox`, setting ``task_outbox``);
* Django apps ``celeriac.contrib.django`` (the outbox table and the ``celeriac``
  management command), ``celeriac.contrib.django.results`` (django-celery-results'
  models, ``result_backend = 'django-db'`` / ``'django-cache'``) and
  ``celeriac.contrib.django.beat`` (django-celery-beat's models and the
  ``DatabaseScheduler``);
* a ``django.tasks`` backend (:mod:`.tasks`);
* the URL schemes ``django-db``, ``django-cache`` and ``django://``
  (:mod:`.engines`), added to celeriac's scheme table when this package is
  imported (every app imports it through its built-in fix-up).

Importing this package does not import Django; see ``docs/django.md``.
"""

from __future__ import annotations

from .engines import register

register()
