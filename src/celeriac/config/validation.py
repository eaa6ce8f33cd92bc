"""Start-up checks of setting values: a wrong type stops the worker naming the setting.

:func:`validate` raises :class:`~celeriac.exceptions.ImproperlyConfigured`
for the first setting whose value cannot work (a string where a number is
needed, an unknown time zone or serializer).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..exceptions import ImproperlyConfigured
from ..serialization import AUTH_NAMES, get_serializer
from .defaults import DEFAULTS
from .targets import queue_targets


def _is_pos_int_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0)


def _is_number_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float, timedelta)) and not isinstance(v, bool))


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "broker_url": (lambda v: v is None or isinstance(v, str), "a URL string"),
    "result_backend": (lambda v: v is None or isinstance(v, str), "a URL string"),
    "worker_concurrency": (_is_pos_int_or_none, "a positive integer"),
    "worker_prefetch_multiplier": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "worker_prefetch_budget": (lambda v: isinstance(v, (int, float)) and not isinstance(
        v, bool) and v >= 0, "a number of seconds >= 0"),
    "worker_disable_prefetch": (lambda v: isinstance(v, bool), "True or False"),
    "worker_max_tasks_per_child": (_is_pos_int_or_none, "a positive integer"),
    "worker_max_memory_per_child": (_is_pos_int_or_none, "a positive integer (KiB)"),
    "worker_lease_seconds": (lambda v: isinstance(v, (int, float)) and v > 0,
                             "a positive number of seconds"),
    "worker_max_redeliveries": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "worker_pool": (lambda v: v in {"prefork", "threads", "solo", "asyncio"},
                    "one of prefork, threads, asyncio, solo"),
    "task_acks_late": (lambda v: isinstance(v, bool), "True or False"),
    "task_always_eager": (lambda v: isinstance(v, bool), "True or False"),
    "task_default_queue": (lambda v: isinstance(v, str) and bool(v), "a queue name"),
    "accept_content": (lambda v: isinstance(v, (list, tuple, set)) and bool(v),
                       "a list of serializer names or content types"),
    "task_serializer": (lambda v: isinstance(v, str), "a serializer name"),
    "task_message_max_size": (lambda v: v is None or (isinstance(v, int) and not isinstance(
        v, bool) and v >= 0), "a number of bytes (0 or None: no limit)"),
    "security_digest": (lambda v: isinstance(v, str) and bool(v), "a digest name (sha256)"),
    "security_seal": (lambda v: isinstance(v, bool), "True or False"),
    "security_replay_window": (lambda v: isinstance(v, (int, float)) and not isinstance(
        v, bool) and v >= 0, "seconds (0: no replay protection)"),
    "security_encryption_keys": (lambda v: v is None or isinstance(v, (str, list, tuple)),
                                 "a file of Fernet keys or a list of keys"),
    "result_expires": (_is_number_or_none, "seconds or a timedelta"),
    "task_time_limit": (_is_number_or_none, "seconds"),
    "task_soft_time_limit": (_is_number_or_none, "seconds"),
    "task_routes": (lambda v: v is None or isinstance(v, (dict, list, tuple, str)) or callable(v),
                    "a dict, a list of routers, or a callable"),
    "beat_schedule": (lambda v: isinstance(v, dict), "a dict of entries"),
    "task_outbox": (lambda v: isinstance(v, bool), "True or False"),
    "task_outbox_database": (lambda v: isinstance(v, str) and bool(v), "a database alias"),
    "task_outbox_retention": (lambda v: isinstance(v, (int, float, timedelta))
                              and not isinstance(v, bool), "seconds or a timedelta"),
    "timezone": (lambda v: v is None or isinstance(v, str) or hasattr(v, "utcoffset"),
                 "an IANA time zone name"),
}


def validate(conf: Mapping[str, Any]) -> None:
    """Raise ImproperlyConfigured naming the first setting with a wrong value."""
    for name, (check, expected) in _CHECKS.items():
        value = conf.get(name, DEFAULTS.get(name))
        if not check(value):
            raise ImproperlyConfigured(f"setting {name}: expected {expected}, got {value!r}")
    tz = conf.get("timezone")
    if isinstance(tz, str):
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ImproperlyConfigured(f"setting timezone: unknown time zone {tz!r}") from None
    queue_targets(conf.get("task_queue_targets"))
    for name in ("event_serializer", "result_serializer"):
        if conf.get(name) in AUTH_NAMES:
            raise ImproperlyConfigured(
                f"setting {name}: 'auth' is not supported: celeriac signs task messages only "
                f"(results, events and remote-control messages stay JSON, as with Celery's "
                f"defaults); use 'json'")
    for name in ("task_serializer", "result_serializer"):
        if conf.get(name) in AUTH_NAMES:
            continue  # checked by celeriac.security.check_settings with the keys
        try:
            get_serializer(conf.get(name) or "json")
        except Exception:
            raise ImproperlyConfigured(
                f"setting {name}: unknown serializer {conf.get(name)!r}") from None
