"""Transactional enqueue: insert task messages through the application's own connection.

``task.apply_async(args, connection=conn)`` (and ``delay`` through a signature's
options) runs the broker's ``publish`` statement on ``conn`` instead of the broker's
pool, so the message is part of the caller's open transaction: consumers see it
(and get its NOTIFY) only when that transaction commits, and it never existed if it
rolls back or the process dies first. Accepted ``conn`` objects, unwrapped to the
DB-API connection underneath:

* a psycopg 3 ``Connection`` or a psycopg2 connection;
* a Django connection wrapper (``django.db.connection`` or ``connections[alias]``),
  whose ``vendor`` must be ``postgresql``;
* an SQLAlchemy ``Connection`` or ``Session`` (``Session.connection()`` joins the
  session's transaction; a ``Connection`` outside a transaction begins one, as
  SQLAlchemy's autobegin would, so ``conn.commit()`` commits the message).

The connection must reach the broker's database: celeriac compares
``current_database()``, the database's oid, the server's port setting and start time with
its own connection's, once per connection object, and raises
:class:`~celeriac.exceptions.ImproperlyConfigured` naming both otherwise. A
connection in autocommit mode outside a transaction block simply commits the
message at once, like ``delay()``. A transaction already aborted by an earlier
error is refused (PostgreSQL would reject the insert anyway).

:func:`shares_database` tells a framework integration whether one of its database
settings names the broker's database (the Django outbox then enqueues through
Django's connection inside ``atomic()`` instead of writing outbox rows).

Failures: there is no retry of the insert itself (a failed statement aborts the
caller's transaction, and its error is the caller's to see); celeriac's own round
trips (schema check, database identity, queue names) retry by the broker's
``retry_policy`` and, inside a producer's publish, end by ``broker_publish_timeout``.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from psycopg.conninfo import conninfo_to_dict

from ...exceptions import ImproperlyConfigured
from ..base import Publish

if TYPE_CHECKING:
    from .broker import PostgresBroker

_IDENTITY = ("SELECT current_database(), (SELECT oid FROM pg_database WHERE datname = "
             "current_database())::bigint, current_setting('port')::integer, "
             "extract(epoch FROM pg_postmaster_start_time())::float8")
_CHECKED: weakref.WeakKeyDictionary[Any, tuple[Any, ...]] = weakref.WeakKeyDictionary()


def unwrap(connection: Any) -> Any:
    """The DB-API connection behind a psycopg, Django or SQLAlchemy object."""
    module = type(connection).__module__ or ""
    if module.startswith("django.") or hasattr(connection, "ensure_connection"):
        vendor = getattr(connection, "vendor", None)
        if vendor != "postgresql":
            raise ImproperlyConfigured(
                f"connection=: Django database {getattr(connection, 'alias', '?')!r} is "
                f"{vendor!r}, not PostgreSQL; transactional enqueue needs the broker's "
                "PostgreSQL database")
        connection.ensure_connection()
        return connection.connection
    if module.startswith("sqlalchemy."):
        if callable(getattr(connection, "connection", None)):  # an ORM Session
            connection = connection.connection()
        elif not connection.in_transaction():
            connection.begin()  # what SQLAlchemy's autobegin does for its own statements
        proxied = connection.connection  # PoolProxiedConnection
        return getattr(proxied, "driver_connection", None) or proxied.dbapi_connection
    return connection


def _is_postgres(raw: Any) -> bool:
    module = type(raw).__module__ or ""
    return module.split(".")[0] in ("psycopg", "psycopg2")


def _identity(raw: Any) -> tuple[Any, ...]:
    cur = raw.cursor()
    try:
        cur.execute(_IDENTITY)
        row = cur.fetchone()
    finally:
        cur.close()
    return tuple(row)


def _aborted(raw: Any) -> bool:
    info = getattr(raw, "info", None)
    status = getattr(info, "transaction_status", None)
    if status is not None:  # psycopg 3 and psycopg2 >= 2.8 both have .info
        return int(status) == 3  # TransactionStatus.INERROR
    return False


def check_same_database(broker: PostgresBroker, raw: Any) -> None:
    """Refuse a connection to another database than the broker's."""
    theirs = _identity(raw)
    ours = broker.db.run(lambda conn: tuple(conn.execute(_IDENTITY).fetchone() or ()),
                         policy=broker.retry_policy, what="identity check")
    if theirs[:3] != ours[:3] or abs(float(theirs[3]) - float(ours[3])) > 0.001:
        raise ImproperlyConfigured(
            f"connection=: the connection is to database {theirs[0]!r} (port {theirs[2]}), "
            f"not the broker's {ours[0]!r} (port {ours[2]}) at {broker.settings.safe_url}; "
            "transactional enqueue must use the broker's database")
    try:
        _CHECKED[raw] = theirs
    except TypeError:
        pass


#: host names that all mean "this machine" (a Unix socket directory too)
_LOCAL = ("", "localhost", "127.0.0.1", "::1")


def _host(value: Any) -> str:
    text = str(value or "").strip().lower()
    return "local" if text in _LOCAL or text.startswith("/") else text


def shares_database(conninfo: str, settings: Mapping[str, Any]) -> bool:
    """True when a Django ``DATABASES`` entry (its ``settings_dict``) names the database
    of ``conninfo``: a PostgreSQL engine, the same database name, host and port (local
    names and socket directories count as one host). A wrong "no" only means the
    integration does not join the transaction; a wrong "yes" is caught by the
    identity check of :func:`publish_on`."""
    engine = str(settings.get("ENGINE") or "")
    if "postgresql" not in engine and "postgis" not in engine:
        return False
    ours = conninfo_to_dict(conninfo)
    name = str(settings.get("NAME") or "")
    return (bool(name) and name == ours.get("dbname")
            and _host(settings.get("HOST")) == _host(ours.get("host"))
            and str(settings.get("PORT") or "5432") == str(ours.get("port") or "5432"))


def publish_on(broker: PostgresBroker, connection: Any, items: list[Publish]) -> None:
    """Run the broker's ``publish`` statement for ``items`` on ``connection``."""
    if not items:
        return
    raw = unwrap(connection)
    if not _is_postgres(raw):
        raise ImproperlyConfigured(
            f"connection=: {type(connection).__module__}.{type(connection).__name__} is "
            "not a PostgreSQL connection (give a psycopg connection, a Django connection "
            "or an SQLAlchemy Connection/Session)")
    if _aborted(raw):
        raise ImproperlyConfigured(
            "connection=: the connection's transaction is aborted by an earlier error; "
            "roll it back first")
    broker.db.ensure_schema()
    if not (_weakrefable(raw) and raw in _CHECKED):
        check_same_database(broker, raw)
    cols = broker._columns(items)
    new = [q for q in cols["channels"] if q not in broker._declared]
    if new:  # outside the caller's transaction: a name row is harmless and never blocks
        broker.db.execute("declare_queues", {"queues": new}, policy=broker.retry_policy)
        broker._declared.update(new)
    cur = raw.cursor()
    try:
        cur.execute(broker.db.sql["publish"], cols)
    finally:
        cur.close()


def _weakrefable(raw: Any) -> bool:
    try:
        weakref.ref(raw)
        return True
    except TypeError:
        return False
