"""Database plumbing shared by the Django integration.

* :func:`on_commit`: ``transaction.on_commit`` for ``Task.delay_on_commit``
  (installed into :mod:`celeriac.hooks` by :func:`.fixup.install_hooks`).
* :func:`fresh` gives a connection that is not stale: outside a transaction it
  is closed first if it errored or outlived ``CONN_MAX_AGE`` (what Django does at
  each request boundary), so long-running processes (workers, beat, the outbox
  relay) honour ``CONN_MAX_AGE`` and recover from dropped connections.
* :func:`close_old_connections` / :func:`drop_inherited_connections`: the
  per-task and after-fork hygiene of the fix-up.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def off_loop(method: F) -> F:
    """Run an ORM call on a helper thread when called on a running event loop.

    The asyncio pool stores states (``STARTED``) from the event loop; Django
    refuses ORM calls there, so they run on a small thread pool (each thread with
    its own connections, kept fresh by :func:`fresh`) and the loop waits, as it
    waits for any other result store.
    """

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        if not _in_event_loop():
            return method(*args, **kwargs)
        global _EXECUTOR
        with _EXECUTOR_LOCK:
            if _EXECUTOR is None:
                _EXECUTOR = ThreadPoolExecutor(4, thread_name_prefix="celeriac-django-db")
        return _EXECUTOR.submit(method, *args, **kwargs).result()

    return call  # type: ignore[return-value]


def on_commit(callback: Callable[[], Any]) -> None:
    """Run ``callback`` after the current transaction on the default database commits."""
    from django.db import transaction

    transaction.on_commit(callback)


def fresh(alias: str | None = None) -> Any:
    """``connections[alias]``, closed first if unusable or older than ``CONN_MAX_AGE``."""
    from django.db import DEFAULT_DB_ALIAS, connections

    conn = connections[alias or DEFAULT_DB_ALIAS]
    if conn.connection is not None and not conn.in_atomic_block:
        conn.close_if_unusable_or_obsolete()
    return conn


def db_time(value: Any) -> Any:
    """An aware datetime as Django stores it: aware with ``USE_TZ``, else naive local time."""
    from django.conf import settings
    from django.utils import timezone

    if value is None or settings.USE_TZ:
        return value
    return timezone.make_naive(value, timezone.get_default_timezone())


def aware(value: Any) -> Any:
    """A datetime read from Django as an aware one (naive values are in ``TIME_ZONE``)."""
    from django.utils import timezone

    if value is None or timezone.is_aware(value):
        return value
    return timezone.make_aware(value, timezone.get_default_timezone())


def _initialized() -> list[Any]:
    from django.db import connections

    try:
        return list(connections.all(initialized_only=True))
    except TypeError:  # Django < 4.1
        return list(connections.all())


def close_old_connections() -> None:
    """Django's ``close_old_connections`` for this thread, sparing open transactions."""
    from django.db import DatabaseError, InterfaceError

    for conn in _initialized():
        if conn.in_atomic_block:
            continue
        try:
            conn.close_if_unusable_or_obsolete()
        except InterfaceError:
            pass
        except DatabaseError as exc:
            if "closed" not in str(exc) and "not connected" not in str(exc):
                raise


def close_all_connections() -> None:
    """Close every connection of this thread (the worker's parent, before forking)."""
    from django.db import DatabaseError, InterfaceError

    for conn in _initialized():
        try:
            conn.close()
        except (InterfaceError, DatabaseError):
            pass


#: driver connections inherited over fork: kept referenced so they are never finalized
#: (a driver's finalizer would write a goodbye on a descriptor that may be reused)
_INHERITED: list[Any] = []


def drop_inherited_connections() -> None:
    """In a forked child: forget connections inherited from the parent without any
    network I/O on them (closing them properly would also break the parent's)."""
    for conn in _initialized():
        raw = conn.connection
        if raw is None:
            continue
        _INHERITED.append(raw)
        fileno = getattr(raw, "fileno", None)
        if callable(fileno):
            try:
                os.close(fileno())
            except (OSError, TypeError, ValueError):
                pass
        conn.connection = None
        conn.closed_in_transaction = False
        conn.in_atomic_block = False
        conn.savepoint_ids = []
        conn.needs_rollback = False


def close_caches() -> None:
    try:
        from django.core.cache import close_caches as close

        close()
    except (ImportError, AttributeError, TypeError):
        pass
