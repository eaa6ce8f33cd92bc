"""Enqueue on commit: tasks sent during a Pyramid request go out when its transaction commits.

A publish (``delay``, ``apply_async``, ``send_task``, a group or chain) made
while the current request's transaction is active is held by the publish
interceptor :func:`intercept` (:mod:`celeriac.hooks`) and handed to the broker
by an after-commit hook of that transaction (the ``transaction`` package, which
``pyramid_tm`` and ``zope.sqlalchemy`` use): nothing is sent if it aborts,
everything is sent, in order, once it commits. The id is known at once
(``delay()`` returns its ``AsyncResult``), the message just waits.

*The current request* is the one passed as first argument of a request-aware
task, else Pyramid's current request (``pyramid.threadlocal``); inside a worker
it is the task's own request, so tasks sent by a ``TransactionalTask`` leave
only if its transaction commits. Its transaction is ``request.tm``'s while
``pyramid_tm`` manages the request (or any explicit manager's open
transaction): an implicit, thread-local transaction that nothing will commit
never holds messages back.

Which publishes wait: those of apps configured by this integration (the ini
file, ``config.include``) and of tasks whose class sets ``on_commit = True``
(:class:`~celeriac.contrib.pyramid.RequestAwareTask` and its subclasses); a task
with ``on_commit = False`` is always sent at once. ``send_immediately()`` (a
context manager) or ``apply_async(..., on_commit=False)`` send at once.

When the broker is PostgreSQL in the database of an SQLAlchemy session joined to
the transaction (zope.sqlalchemy), the messages are inserted through that session,
inside the transaction (:mod:`celeriac.contrib.transactions`): no window at all.
Otherwise the window is the one of Celery's ``delay_on_commit``: a process that
dies between the commit and the publish loses the message (logged when the
publish itself fails after the commit).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from celeriac import hooks
from celeriac.brokers.base import Publish

from ..transactions import publish_committed, same_database_publisher, sqlalchemy_settings

logger = logging.getLogger("celeriac.contrib.pyramid")

_SEND_NOW: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "celeriac_pyramid_send_now", default=False)
_CALLER: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "celeriac_pyramid_caller", default=None)
#: apps whose every publish waits for the request's commit
_APPS: weakref.WeakSet[Any] = weakref.WeakSet()
_previous_on_commit: list[Callable[[Callable[[], Any]], None] | None] = [None]


def defer_app(app: Any) -> None:
    """Make every publish of ``app`` during a request wait for its commit."""
    _APPS.add(app)


@contextlib.contextmanager
def send_immediately() -> Iterator[None]:
    """Inside this block, publishes go to the broker at once (no waiting for commit)."""
    token = _SEND_NOW.set(True)
    try:
        yield
    finally:
        _SEND_NOW.reset(token)


@contextlib.contextmanager
def caller_request(request: Any) -> Iterator[None]:
    """The request whose transaction publishes inside this block join."""
    token = _CALLER.set(request)
    try:
        yield
    finally:
        _CALLER.reset(token)


def current_transaction(request: Any = None) -> Any:
    """The active transaction of ``request`` (default: the caller's or Pyramid's current
    request), or None."""
    if request is None:
        request = _CALLER.get()
    if request is None:
        from pyramid.threadlocal import get_current_request

        request = get_current_request()
    if request is None:
        return None
    try:
        manager = request.tm
    except AttributeError:  # pyramid_tm not included, not a task request
        return None
    inner = getattr(manager, "manager", manager)  # the thread-local manager's own
    txn = getattr(inner, "_txn", None)
    if txn is None or getattr(txn, "status", None) not in ("Active", "Doomed"):
        return None
    managed = bool(getattr(request, "environ", {}).get("tm.active"))
    return txn if managed or getattr(inner, "explicit", False) else None


def _defers(app: Any, item: Publish) -> bool:
    registry = getattr(app, "_tasks", None)  # not app.tasks: that would finalize the app
    task = registry.get(item.message.task_name or "") if registry is not None else None
    choice = getattr(task, "on_commit", None)
    if choice is not None:
        return bool(choice)
    return app in _APPS


def intercept(app: Any, items: Sequence[Publish]) -> bool:
    """Publish interceptor: hold ``items`` until the current request's transaction commits."""
    if _SEND_NOW.get():
        return False
    txn = current_transaction()
    if txn is None or not any(_defers(app, item) for item in items):
        return False
    for session in joined_sessions(txn):
        publish = same_database_publisher(app, sqlalchemy_settings(session.get_bind()))
        if publish is not None:
            publish(items, session)  # inserted in the transaction: no window at all
            return True
    txn.addAfterCommitHook(_after_commit, args=(app, list(items)))
    return True


def joined_sessions(txn: Any) -> list[Any]:
    """The SQLAlchemy sessions zope.sqlalchemy has joined to ``txn``."""
    resources = getattr(txn, "_resources", None) or []
    sessions = [r.session for r in resources if getattr(r, "session", None) is not None]
    return [s for s in sessions if _bound(s)]


def _bound(session: Any) -> bool:
    try:
        return session.get_bind() is not None
    except Exception:  # an unbound session: nothing to compare with the broker
        return False


def _after_commit(committed: bool, app: Any, items: list[Publish]) -> None:
    if not committed:
        logger.debug("Transaction aborted: %d task message(s) not sent", len(items))
        return
    with send_immediately():
        publish_committed(app, items)


def on_commit(callback: Callable[[], Any]) -> None:
    """``Task.delay_on_commit``: after the current request's commit, else as before."""
    txn = current_transaction()
    if txn is not None:
        txn.addAfterCommitHook(lambda committed: committed and callback())
        return
    previous = _previous_on_commit[0]
    if previous is not None:
        previous(callback)
    else:
        callback()


def install() -> None:
    """Plug into :mod:`celeriac.hooks` (idempotent); a Django handler stays in use for
    calls made outside a Pyramid transaction."""
    current = hooks.on_commit_handler()
    if current is not on_commit:
        _previous_on_commit[0] = current
        hooks.register_on_commit(on_commit)
    hooks.register_publish_interceptor(intercept)
