"""The Django rows of the URL scheme table (:mod:`celeriac.brokers.registry`).

* ``result_backend = 'django-db'``: results in django-celery-results' tables
  (:class:`~.results.store.DatabaseResultStore`);
* ``result_backend = 'django-cache'``: results in Django's cache framework
  (:class:`~.results.cache_store.CacheResultStore`);
* ``beat_schedule_store = 'django://[alias]'``: periodic tasks in
  django-celery-beat's tables (:class:`~.beat.store.DjangoScheduleStore`);
* ``dashboard_history_url = 'django-db'``: the dashboard's history in the
  Django database (:mod:`.history`, through :mod:`celeriac.hooks`).

The table lives below this package and never imports it: :func:`register`
adds the rows when ``celeriac.contrib.django`` is imported, which every app
does through its built-in fix-up (``celeriac.app.base.BUILTIN_FIXUPS``). As
for every engine, a loader imports its stores only when a URL names them, so
Django is needed only then.
"""

from __future__ import annotations

from typing import Any

from celeriac import hooks
from celeriac.brokers.registry import BEAT, RESULTS, Engine, Scheme, register_scheme


def database_engine() -> Engine:
    """The Django database: results (``django-db``) and schedules (``django://``)."""
    from .beat.store import store_for_url as beat_store
    from .results.store import DatabaseResultStore

    return Engine(None, DatabaseResultStore, beat_store)


def cache_engine() -> Engine:
    """Django's cache framework: results (``django-cache``)."""
    from .results.cache_store import CacheResultStore

    return Engine(None, CacheResultStore, None)


ROWS: dict[str, Scheme] = {
    "django-db": Scheme(database_engine, roles=frozenset({RESULTS}), extra="django"),
    "django-cache": Scheme(cache_engine, roles=frozenset({RESULTS}), extra="django"),
    "django": Scheme(database_engine, roles=frozenset({BEAT}), extra="django"),
}


def open_history(url: str) -> Any:
    """The dashboard history's database for a ``django-db`` URL."""
    from .history import open_history as opener

    return opener(url)


def register() -> None:
    """Add the Django rows to the scheme table and the dashboard's ``django-db`` history
    (idempotent)."""
    for name, row in ROWS.items():
        register_scheme(name, row)
    hooks.register_history_database("django-db", open_history)
