"""Task options for concurrency limits and unique calls: checking them, naming keys.

A task with ``concurrency_limit=N`` runs at most ``N`` at once across every worker
of the broker, per ``concurrency_key`` (a ``str.format`` template over the call's
arguments, ``"{0}"`` or ``"{domain}"``, or a callable taking them; no key: one limit
for the task). The worker takes a broker *slot* named :func:`slot_name` before it
runs the body (``celeriac.worker.slots``); ``on_busy`` says what a call that finds
it full does: ``"requeue"`` (back to the broker, delayed by ``busy_countdown``
seconds, as often as needed), ``"retry"`` (``Task.retry(countdown=busy_countdown)``
with :class:`~celeriac.exceptions.CouldNotAcquireLock`, counted against
``max_retries``, CommCare's ``serial_task``) or ``"skip"`` (dropped, stored as
REVOKED). A task with ``unique_for=seconds`` is published at most once per
``unique_key`` (same forms; default: the task name and all its arguments) per
window: a duplicate is not sent and the caller gets the first call's result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ..exceptions import ImproperlyConfigured

BUSY_ACTIONS = ("requeue", "retry", "skip")
logger = logging.getLogger("celeriac.app")


def check_task_options(task: Any) -> None:
    """Refuse bad limit/uniqueness options when the task is defined, naming the option."""
    name = task.name
    limit = getattr(task, "concurrency_limit", None)
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ImproperlyConfigured(f"task {name}: concurrency_limit must be an integer "
                                       f">= 1, not {limit!r}")
        if getattr(task, "on_busy", "requeue") not in BUSY_ACTIONS:
            raise ImproperlyConfigured(f"task {name}: on_busy must be one of "
                                       f"{', '.join(BUSY_ACTIONS)}, not {task.on_busy!r}")
        if float(getattr(task, "busy_countdown", 1.0)) <= 0:
            raise ImproperlyConfigured(f"task {name}: busy_countdown must be > 0 seconds")
        if acks_late_off(task):
            raise ImproperlyConfigured(
                f"task {name}: concurrency_limit needs acks_late (the slot is held by the "
                "message's lease, which an early acknowledgement ends)")
    _check_key(name, "concurrency_key", getattr(task, "concurrency_key", None))
    window = getattr(task, "unique_for", None)
    if window is not None and (isinstance(window, bool) or not isinstance(window, (int, float))
                               or window <= 0):
        raise ImproperlyConfigured(f"task {name}: unique_for must be a number of seconds "
                                   f"> 0, not {window!r}")
    _check_key(name, "unique_key", getattr(task, "unique_key", None))


def acks_late_off(task: Any) -> bool:
    """True when the task acknowledges before running (``acks_late=False``)."""
    try:
        return task.acks_late is False
    except Exception:  # the app's configuration cannot be read yet: the worker checks
        return False


def _check_key(name: str, option: str, key: Any) -> None:
    if key is not None and not isinstance(key, str) and not callable(key):
        raise ImproperlyConfigured(f"task {name}: {option} must be a format string or a "
                                   f"callable, not {key!r}")


def format_key(task: Any, option: str, key: Any, args: tuple[Any, ...],
               kwargs: Mapping[str, Any]) -> str:
    """``key`` (template or callable) applied to a call's arguments; a clear error when
    they do not fit."""
    try:
        value = key(*args, **kwargs) if callable(key) else key.format(*args, **kwargs)
    except (IndexError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"task {task.name}: {option} {key!r} does not fit the call's "
                         f"arguments ({type(exc).__name__}: {exc})") from exc
    return str(value)


def slot_name(task: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
    """The broker slot a call of ``task`` must hold, or None without a limit."""
    if getattr(task, "concurrency_limit", None) is None:
        return None
    key = getattr(task, "concurrency_key", None)
    if key is None:
        return str(task.name)
    return f"{task.name}:{format_key(task, 'concurrency_key', key, args, kwargs)}"


def unique_key(task: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    """The claim key of a ``unique_for`` call."""
    key = getattr(task, "unique_key", None)
    if key is not None:
        return f"{task.name}:{format_key(task, 'unique_key', key, args, kwargs)}"
    text = json.dumps([list(args), dict(kwargs)], sort_keys=True, default=repr)
    return f"{task.name}:{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def publish_unique(task: Any, args: Any, kwargs: Mapping[str, Any],
                   task_id: str | None, send: Callable[[str], Any]) -> Any:
    """Publish through ``send(task_id)`` unless the call's unique key is claimed; a
    duplicate returns the first call's result. A failed publish gives the claim back,
    so a retried call is not dropped."""
    task_id = task_id or str(uuid.uuid4())
    key = unique_key(task, args, kwargs)
    broker = task.app.broker
    held = broker.claim_unique(key, task_id, float(task.unique_for))
    if held is not None:
        logger.info("Not sending %s[%s]: a call with unique key %r was sent within %ss "
                    "(%s)", task.name, task_id, key, task.unique_for, held)
        return task.AsyncResult(held)
    try:
        return send(task_id)
    except BaseException:
        broker.release_unique(key, task_id)
        raise
