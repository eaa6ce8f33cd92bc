"""Extension points for integrations such as ``celeriac.contrib.django``.

Core code calls these at one place each; integrations register into them. None
of them knows about any framework:

* **on-commit** (:func:`register_on_commit`, :func:`on_commit`): how
  ``Task.delay_on_commit`` / ``apply_async_on_commit`` defer a call until the
  current database transaction commits. Without a registered handler they
  raise :class:`RuntimeError` naming what is missing (never publish early).
* **publish interceptors** (:func:`register_publish_interceptor`): consulted
  by every publish path (``delay``, ``apply_async``, ``send_task``, group
  members) just before the broker is called. An interceptor that returns
  True has taken the whole batch (e.g. written it to a transactional outbox)
  and the broker is not called.
* **admission checks** (:func:`register_admission_check`): consulted by the
  worker for each received message after its own checks (expired, revoked);
  a check that returns a reason string makes the worker acknowledge and drop
  the message without running it (logged with the reason, no result stored).
  Used to drop a second copy of one outbox publish. A check that raises is
  logged and treated as "run it" (at-least-once wins over de-duplication).
* **history databases** (:func:`register_history_database`): URL schemes of
  ``dashboard_history_url`` an integration serves (``django-db``: the Django
  project's database), each an opener ``(url) -> Database`` of
  :mod:`celeriac.dashboard.history.engines`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app.base import Celery
    from .app.request import Request
    from .brokers.base import Publish

logger = logging.getLogger("celeriac.hooks")

OnCommit = Callable[[Callable[[], Any]], None]
Interceptor = Callable[["Celery", "Sequence[Publish]"], bool]
AdmissionCheck = Callable[["Celery", "Request"], "str | None"]

_on_commit: OnCommit | None = None
_interceptors: list[Interceptor] = []
_admission_checks: list[AdmissionCheck] = []
_history_databases: dict[str, Callable[[str], Any]] = {}


def register_on_commit(handler: OnCommit | None) -> None:
    """Install the function that runs a callback after the current transaction commits."""
    global _on_commit
    _on_commit = handler


def on_commit_handler() -> OnCommit | None:
    """The installed on-commit function (an integration may delegate to the one it
    replaces: the Pyramid one hands calls made outside its transactions to Django's)."""
    return _on_commit


def on_commit(callback: Callable[[], Any]) -> None:
    """Run ``callback`` once the current transaction commits (or now, outside one)."""
    if _on_commit is None:
        raise RuntimeError(
            "delay_on_commit()/apply_async_on_commit() need a transaction integration: "
            "with Django, set DJANGO_SETTINGS_MODULE (or add 'celeriac.contrib.django' to "
            "INSTALLED_APPS) so celeriac.contrib.django installs it; with Pyramid, import "
            "celeriac.contrib.pyramid (config.include('celeriac.contrib.pyramid'))")
    _on_commit(callback)


def register_publish_interceptor(interceptor: Interceptor) -> None:
    if interceptor not in _interceptors:
        _interceptors.append(interceptor)


def unregister_publish_interceptor(interceptor: Interceptor) -> None:
    if interceptor in _interceptors:
        _interceptors.remove(interceptor)


def intercept_publish(app: Celery, items: Sequence[Publish]) -> bool:
    """True when an interceptor took ``items`` (the caller must not publish them)."""
    return any(interceptor(app, items) for interceptor in list(_interceptors))


def register_admission_check(check: AdmissionCheck) -> None:
    if check not in _admission_checks:
        _admission_checks.append(check)


def unregister_admission_check(check: AdmissionCheck) -> None:
    if check in _admission_checks:
        _admission_checks.remove(check)


def refuse_reason(app: Celery, call: Request) -> str | None:
    """The first reason an admission check gives to drop ``call``, or None to run it."""
    for check in list(_admission_checks):
        try:
            reason = check(app, call)
        except Exception:  # at-least-once: a failing check never loses the message
            logger.exception("Admission check %r failed for %s; running it", check, call.id)
            continue
        if reason:
            return reason
    return None


def register_history_database(scheme: str, opener: Callable[[str], Any]) -> None:
    """Serve ``dashboard_history_url`` URLs of ``scheme`` with ``opener(url)``."""
    _history_databases[scheme] = opener


def history_database_opener(scheme: str) -> Callable[[str], Any] | None:
    return _history_databases.get(scheme)
