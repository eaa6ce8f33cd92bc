"""What the framework integrations share to send tasks with the application's transaction.

* :func:`same_database_publisher`: when the broker lives in the application's own
  database (the PostgreSQL broker, :mod:`celeriac.brokers.postgres.enqueue`), a
  callable that inserts messages through the application's connection, inside its
  open transaction: visible to workers at commit, gone on rollback, no window
  between the two. Django's outbox (``connections[alias].settings_dict``) and
  Pyramid's enqueue-on-commit (an SQLAlchemy session's engine URL, described by
  :func:`sqlalchemy_settings`) use it.
* :func:`publish_committed`: the publish that follows a commit, which may no longer
  raise into the code that committed: a failure is logged with every task name and
  id (the message is lost, as with Celery's ``delay_on_commit``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from celeriac.app.publish import publish_items
from celeriac.brokers.base import Publish

logger = logging.getLogger("celeriac.contrib")

InTransaction = Callable[[Sequence[Publish], Any], None]


def same_database_publisher(app: Any, settings: Mapping[str, Any]) -> InTransaction | None:
    """``publish(items, connection)`` inside the caller's transaction when the broker lives
    in the database ``settings`` describe (Django's ``settings_dict`` keys: ``ENGINE``,
    ``NAME``, ``HOST``, ``PORT``), else None.

    The broker must say ``shares_database(settings)`` and take
    ``publish_in_transaction(connection, items)``
    (:meth:`celeriac.brokers.base.Broker.publish_in_transaction`); the PostgreSQL
    broker does both, every other broker lacks ``shares_database``.
    """
    broker = app.broker
    publish = getattr(broker, "publish_in_transaction", None)
    shares = getattr(broker, "shares_database", None)
    if publish is None or shares is None or not shares(settings):
        return None
    return lambda items, connection: publish(connection, list(items))


def sqlalchemy_settings(engine: Any) -> dict[str, Any]:
    """An SQLAlchemy engine's database in :func:`same_database_publisher`'s terms."""
    url = getattr(engine, "url", None)
    if url is None:
        return {}
    backend = url.get_backend_name() if hasattr(url, "get_backend_name") else ""
    return {"ENGINE": backend, "NAME": url.database or "", "HOST": url.host or "",
            "PORT": url.port or ""}


def publish_committed(app: Any, items: Sequence[Publish]) -> bool:
    """Publish ``items`` after their transaction committed; False (logged) if it failed."""
    try:
        publish_items(app, list(items), intercept=False)
    except Exception as exc:
        names = ", ".join(f"{i.message.task_name}[{i.message.task_id}]" for i in items)
        logger.error("Sending %s after the commit failed: %s", names, exc)
        return False
    return True
