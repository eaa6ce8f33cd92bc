"""Celery 3's ``celery.task.control`` module: remote control of the current app's workers.

``from celeriac.task.control import inspect`` (Celery 3 and 4 users wrote
``celery.task.control``; Websauna's shell snippets still do). Each name acts on
:data:`celeriac.current_app` when called: ``inspect()``, ``revoke(task_id)``,
``broadcast(command)``, ``ping()``, ``rate_limit(task_name, rate)``,
``time_limit(task_name, soft, hard)``, ``purge()`` and its old name ``discard_all()``.
"""

from __future__ import annotations

from typing import Any

from ..app.state import current_app

__all__ = ["broadcast", "discard_all", "inspect", "ping", "purge", "rate_limit", "revoke",
           "time_limit"]


def inspect(*args: Any, **kwargs: Any) -> Any:
    """``current_app.control.inspect(...)``: ``inspect().scheduled()``, ``.active()``..."""
    return current_app.control.inspect(*args, **kwargs)


def revoke(*args: Any, **kwargs: Any) -> Any:
    """``current_app.control.revoke(task_id, terminate=False, ...)``."""
    return current_app.control.revoke(*args, **kwargs)


def broadcast(*args: Any, **kwargs: Any) -> Any:
    """``current_app.control.broadcast(command, arguments=None, reply=False, ...)``."""
    return current_app.control.broadcast(*args, **kwargs)


def ping(*args: Any, **kwargs: Any) -> Any:
    """``current_app.control.ping(timeout=1.0)``: the replies of the live workers."""
    return current_app.control.ping(*args, **kwargs)


def rate_limit(*args: Any, **kwargs: Any) -> Any:
    """``current_app.control.rate_limit(task_name, rate_limit)``."""
    return current_app.control.rate_limit(*args, **kwargs)


def time_limit(*args: Any, **kwargs: Any) -> Any:
    """``current_app.control.time_limit(task_name, soft=None, hard=None)``."""
    return current_app.control.time_limit(*args, **kwargs)


def purge(*args: Any, **kwargs: Any) -> Any:
    """``current_app.control.purge()``: delete the waiting messages; returns how many."""
    return current_app.control.purge(*args, **kwargs)


#: Celery 3's name for :func:`purge`
discard_all = purge
