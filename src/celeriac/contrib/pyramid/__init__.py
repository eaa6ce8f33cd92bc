"""celeriac for Pyramid (and Websauna): what pyramid_celery and Websauna's task module gave.

``pip install 'celeriac[pyramid]'``; see docs/pyramid.md. Everything a project
imports is here, under the names it knows:

* ``celery_app``: the app configured from the ini file given with ``--ini``
  (``celeriac -A celeriac.contrib.pyramid.celery_app worker --ini development.ini``);
  :func:`add_ini_options` gives ``--ini`` to your own app (:mod:`.app`);
* ``includeme`` (``config.include('celeriac.contrib.pyramid')``) and the
  ``config.configure_celery(ini_path)`` directive;
* ``RequestAwareTask``, ``TransactionalTask`` (:mod:`.tasks`);
* ``send_immediately`` and enqueue-on-commit (:mod:`.commit`), installed into
  :mod:`celeriac.hooks` on import;
* the ``pshell`` helper (:mod:`.shell`).
"""

from __future__ import annotations

from .app import add_ini_options, bind, celery_app, configure, includeme
from .commit import install as _install
from .commit import send_immediately
from .tasks import RequestAwareTask, TransactionalTask

_install()

__all__ = ["RequestAwareTask", "TransactionalTask", "add_ini_options", "bind", "celery_app",
           "configure", "includeme", "send_immediately"]
