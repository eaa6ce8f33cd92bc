"""Settings: Celery's lowercase names and defaults, namespaces, old names, validation.

``Settings`` is the mapping behind ``app.conf``: attribute and item access,
``update``, and Celery's defaults. :func:`from_namespace` reads the
``CELERY_*`` upper-case form Django projects use (and Celery's pre-4.0 names,
as the Kuma seed still does); an unknown name in a namespace is reported.
:func:`validate` checks types at start-up and raises
:class:`~celeriac.exceptions.ImproperlyConfigured` naming the setting.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

from .config_names import ACCEPTED_ONLY, OLD_NAMES
from .exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

PUBLISH_RETRY_POLICY = {"max_retries": 3, "interval_start": 0, "interval_step": 0.2,
                        "interval_max": 1}

DEFAULTS: dict[str, Any] = {
    # broker
    "broker_url": None, "broker_read_url": None, "broker_write_url": None,
    "broker_transport": None, "broker_transport_options": {}, "broker_use_ssl": False,
    "broker_connection_retry": True, "broker_connection_retry_on_startup": None,
    "broker_connection_max_retries": 100, "broker_connection_timeout": 4.0,
    "broker_heartbeat": 120, "broker_pool_limit": 10, "broker_login_method": None,
    "broker_failover_strategy": None, "broker_channel_error_retry": False,
    # results
    "result_backend": None, "result_backend_transport_options": {}, "result_expires":
    timedelta(days=1), "result_extended": False, "result_serializer": "json",
    "result_accept_content": None, "result_compression": None, "result_persistent": None,
    "result_cache_max": -1, "result_chord_join_timeout": 3.0,
    "result_chord_retry_interval": 1.0, "result_backend_always_retry": False,
    "result_backend_max_retries": float("inf"), "result_failure_expires": None,
    "result_chord_expires": None,
    # tasks
    "task_serializer": "json", "accept_content": ["json"], "task_compression": None,
    "task_protocol": 2, "task_default_queue": "celery", "task_default_exchange": None,
    "task_default_exchange_type": "direct", "task_default_routing_key": None,
    "task_default_priority": None, "task_default_delivery_mode": 2,
    "task_queues": None, "task_routes": None, "task_create_missing_queues": True,
    "task_queue_max_priority": None, "task_inherit_parent_priority": False,
    "task_always_eager": False, "task_eager_propagates": False,
    "task_store_eager_result": False, "task_acks_late": True,
    "task_acks_on_failure_or_timeout": True, "task_reject_on_worker_lost": None,
    "task_track_started": False, "task_ignore_result": False,
    "task_store_errors_even_if_ignored": False, "task_time_limit": None,
    "task_soft_time_limit": None, "task_default_rate_limit": None,
    "task_annotations": None, "task_publish_retry": True,
    "task_publish_retry_policy": PUBLISH_RETRY_POLICY, "task_send_sent_event": False,
    "task_remote_tracebacks": False, "task_allow_error_cb_on_chord_header": False,
    "task_cls": None, "task_default_retry_delay": 180,
    # worker
    "worker_concurrency": None, "worker_prefetch_multiplier": 1, "worker_pool": "prefork",
    "worker_max_tasks_per_child": None, "worker_max_memory_per_child": None,
    "worker_disable_rate_limits": False, "worker_send_task_events": False,
    "worker_hijack_root_logger": True, "worker_log_color": None,
    "worker_log_format": "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s",
    "worker_task_log_format": "[%(asctime)s: %(levelname)s/%(processName)s] "
    "%(task_name)s[%(task_id)s]: %(message)s",
    "worker_redirect_stdouts": True, "worker_redirect_stdouts_level": "WARNING",
    "worker_soft_shutdown_timeout": 30.0, "worker_enable_remote_control": True,
    "worker_lost_wait": 10.0, "worker_direct": False, "worker_state_db": None,
    "worker_timer_precision": 1.0, "worker_proc_alive_timeout": 4.0,
    "worker_autoscaler": None, "worker_pool_restarts": False,
    "worker_cancel_long_running_tasks_on_connection_loss": False,
    "worker_deduplicate_successful_tasks": False, "worker_eta_task_limit": None,
    "worker_disable_prefetch": False, "worker_pool_start_method": "fork",
    "worker_enable_soft_shutdown_on_idle": False,
    # celeriac: leases, heartbeats, poison messages
    "worker_lease_seconds": 30.0, "worker_heartbeat_interval": None,
    "worker_max_redeliveries": 3,
    # beat
    "beat_schedule": {}, "beat_scheduler": None, "beat_schedule_filename": "celerybeat-schedule",
    "beat_sync_every": 0, "beat_max_loop_interval": 0, "beat_cron_starting_deadline": None,
    "beat_schedule_store": None, "beat_redis_key_prefix": None, "beat_lease_seconds": 10.0,
    "beat_claim_timeout": 30.0, "beat_fire_retention": 3600.0,
    # celeriac.contrib.django: transactional outbox (docs/django.md)
    "task_outbox": False, "task_outbox_database": "default", "task_outbox_retention": 86400.0,
    "task_outbox_claim_timeout": 30.0, "worker_outbox_relay": True,
    # time
    "timezone": None, "enable_utc": True,
    # modules
    "imports": (), "include": (),
    # events and control
    "event_queue_ttl": 5.0, "event_queue_expires": 60.0, "event_queue_prefix": "celeryev",
    "event_serializer": "json", "event_exchange": "celeryev", "control_queue_ttl": 300.0,
    "control_queue_expires": 10.0, "control_exchange": "celery",
    # security
    "security_key": None, "security_key_password": None, "security_certificate": None,
    "security_cert_store": None, "security_digest": "sha256",
    # redis tuning
    "redis_max_connections": None, "redis_socket_timeout": 120.0,
    "redis_socket_connect_timeout": None, "redis_retry_on_timeout": False,
    "redis_socket_keepalive": False, "redis_backend_use_ssl": None,
    "redis_backend_health_check_interval": None, "redis_backend_credential_provider": None,
    "redis_password": None, "redis_host": None, "redis_port": None, "redis_db": None,
    # database backend (accepted for compatibility)
    "database_url": None, "database_table_names": None,
    "database_engine_options": {"pool_pre_ping": True, "pool_recycle": 3600},
    "database_short_lived_sessions": False, "database_table_schemas": None,
    "database_create_tables_at_setup": True,
}

DEFAULTS.update({k: v for k, v in ACCEPTED_ONLY.items() if k not in DEFAULTS})


class Settings(dict):
    """``app.conf``: a dict of settings with attribute access and Celery's defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__({k: _copy(v) for k, v in DEFAULTS.items()})
        self.update(*args, **kwargs)
        self.changes: dict[str, Any] = {}

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"no setting {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "changes":
            object.__setattr__(self, key, value)
        else:
            self[key] = value

    def __delattr__(self, key: str) -> None:
        try:
            del self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __missing__(self, key: str) -> Any:
        if key in OLD_NAMES:  # ``app.conf.CELERY_ALWAYS_EAGER`` reads the new setting
            return self[OLD_NAMES[key]]
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        key = OLD_NAMES.get(key, key)  # ``conf.update(CELERY_ALWAYS_EAGER=True)``, as Celery
        if key in ("imports", "include") and isinstance(value, str):
            value = tuple(value.replace(",", " ").split())  # an INI-style list of modules
        super().__setitem__(key, value)
        changes = self.__dict__.get("changes")
        if changes is not None:
            changes[key] = value

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self or self[key] is None:
            self[key] = default
        return self[key]

    def humanize(self) -> str:
        return "\n".join(f"{k}: {self[k]!r}" for k in sorted(self.changes))


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value


def from_mapping(source: Mapping[str, Any] | Any, namespace: str | None) -> dict[str, Any]:
    """Read settings from a mapping or object, honouring ``namespace`` (e.g. ``CELERY``).

    With a namespace only ``<NAMESPACE>_<UPPER_NAME>`` keys (and Celery's old
    ``CELERY*`` names) are read; an unknown ``<NAMESPACE>_*`` key is reported.
    Without one, lowercase names and old upper-case names are read, and an
    unknown upper-case ``CELERY*``/``BROKER_*`` key is reported.
    """
    out: dict[str, Any] = {}
    prefix = f"{namespace.upper()}_" if namespace else ""
    for key in _keys(source):
        name = _setting_name(key, prefix)
        if name is not None:
            out[name] = _value(source, key)
        elif _looks_like_setting(key, prefix):
            _report_unknown(key)
        elif not prefix and key.islower() and not key.startswith("_"):
            value = _value(source, key)
            if _is_data(value):
                out[key] = value  # user-defined lowercase settings are kept, as in Celery
    return out


def _setting_name(key: str, prefix: str) -> str | None:
    """The lowercase setting ``key`` stands for, or None if it names no known setting."""
    if not prefix and key in DEFAULTS:
        return key
    if key in OLD_NAMES and (not prefix or key.startswith(prefix) or key.startswith("CELERY")):
        return OLD_NAMES[key]
    if prefix and key.startswith(prefix) and key[len(prefix):].lower() in DEFAULTS:
        return key[len(prefix):].lower()
    return None


def _looks_like_setting(key: str, prefix: str) -> bool:
    if prefix:
        return key.startswith(prefix)
    return key.isupper() and key.startswith(("CELERY", "BROKER_"))


def _is_data(value: Any) -> bool:
    import inspect

    return not (inspect.ismodule(value) or inspect.isclass(value) or inspect.isroutine(value))


def _keys(source: Mapping[str, Any] | Any) -> Iterable[str]:
    keys = source.keys() if isinstance(source, Mapping) else dir(source)
    return [k for k in keys if isinstance(k, str) and not k.startswith("__")]


def _value(source: Mapping[str, Any] | Any, key: str) -> Any:
    """Read one key; only keys that may be settings are read (a Django settings
    object evaluates attributes lazily)."""
    return source[key] if isinstance(source, Mapping) else getattr(source, key)


def _report_unknown(key: str) -> None:
    message = f"Unknown celeriac setting {key!r}: it is ignored (check the spelling)"
    warnings.warn(message, stacklevel=4)
    logger.warning(message)


def _is_pos_int_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0)


def _is_number_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float, timedelta)) and not isinstance(v, bool))


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "broker_url": (lambda v: v is None or isinstance(v, str), "a URL string"),
    "result_backend": (lambda v: v is None or isinstance(v, str), "a URL string"),
    "worker_concurrency": (_is_pos_int_or_none, "a positive integer"),
    "worker_prefetch_multiplier": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
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
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ImproperlyConfigured(f"setting timezone: unknown time zone {tz!r}") from None
    from .serialization import get_serializer

    for name in ("task_serializer", "result_serializer"):
        try:
            get_serializer(conf.get(name) or "json")
        except Exception:
            raise ImproperlyConfigured(
                f"setting {name}: unknown serializer {conf.get(name)!r}") from None


def seconds(value: Any) -> float | None:
    """Turn a number or timedelta setting into seconds."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)
