"""The dashboard's settings, read once from ``app.conf`` and the command line.

Every ``dashboard_*`` setting is checked at start-up; a wrong value stops the
dashboard with a message naming the setting (see docs/configuration.md and
docs/dashboard.md).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from ..exceptions import ImproperlyConfigured
from .auth import AuthConfig, load_users


def _seconds(value: Any, name: str, *, allow_none: bool = True) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ImproperlyConfigured(f"{name} must be a positive number of seconds or a "
                                   f"timedelta, not {value!r}")
    return float(value)


@dataclass
class DashboardConfig:
    """Everything one dashboard process needs to know."""

    host: str = "127.0.0.1"
    port: int = 5555
    history_url: str | None = None
    retention: float | None = 7 * 86400.0
    max_tasks: int | None = None
    auth: AuthConfig = field(default_factory=lambda: AuthConfig("none", {}))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    queue_targets: Mapping[str, float] = field(default_factory=dict)
    refresh_interval: float = 2.0
    page_size: int = 50

    @classmethod
    def from_app(cls, app: Any, *, host: str = "127.0.0.1", port: int = 5555,
                 auth: str | None = None, users_file: str | None = None,
                 history_url: str | None = None) -> DashboardConfig:
        conf = app.conf
        retention = _seconds(conf.get("dashboard_history_retention"),
                             "dashboard_history_retention")
        max_tasks = conf.get("dashboard_history_max_tasks")
        if max_tasks is not None and (not isinstance(max_tasks, int) or isinstance(
                max_tasks, bool) or max_tasks <= 0):
            raise ImproperlyConfigured("dashboard_history_max_tasks must be a positive "
                                       f"integer, not {max_tasks!r}")
        targets = conf.get("dashboard_queue_targets") or {}
        if not isinstance(targets, Mapping):
            raise ImproperlyConfigured("dashboard_queue_targets must be a dict: queue -> "
                                       "seconds")
        checked = {str(q): _seconds(v, f"dashboard_queue_targets[{q!r}]",
                                    allow_none=False) or 0.0 for q, v in targets.items()}
        url = history_url or conf.get("dashboard_history_url")
        if url is not None and not isinstance(url, str):
            raise ImproperlyConfigured("dashboard_history_url must be a URL string")
        key = conf.get("dashboard_secret_key")
        if key is not None and (not isinstance(key, str) or len(key) < 16):
            raise ImproperlyConfigured("dashboard_secret_key must be a string of at least "
                                       "16 characters")
        users = load_users(conf.get("dashboard_users"),
                           users_file or conf.get("dashboard_users_file"))
        auth_spec = auth or conf.get("dashboard_auth")
        if auth_spec is not None and not isinstance(auth_spec, str):
            raise ImproperlyConfigured("dashboard_auth must be 'password', 'header:NAME' or "
                                       "'none'")
        return cls(host=host, port=port, history_url=url, retention=retention,
                   max_tasks=max_tasks, auth=AuthConfig.build(auth_spec, users),
                   secret_key=key or secrets.token_urlsafe(32), queue_targets=checked)
