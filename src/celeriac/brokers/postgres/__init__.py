"""PostgreSQL for celeriac: broker, result store, schedule store, schema and migrations.

Modules: :mod:`.broker` (``postgresql://`` broker), :mod:`.results` (result store,
also Celery's ``db+postgresql://``), :mod:`.beat_store` (schedule store and fire-time
claims), :mod:`.enqueue` (``apply_async(connection=...)``), :mod:`.db` (URL options,
pools, schema check, retries), :mod:`.deadline` (round trips cut at a publish's
deadline), :mod:`.listener` (LISTEN/NOTIFY), :mod:`.migrate` and ``migrations/``
(schema versions), :mod:`.maintenance` (cleanup and VACUUM), :mod:`.admin` (what
``celeriac db`` runs). ``queries.sql`` holds every statement, named and described at
its top. Needs the ``postgres`` extra (psycopg 3 and psycopg_pool); nothing here is
imported unless a PostgreSQL URL is used (``postgres_engine`` in
:mod:`celeriac.brokers.registry`).
"""
