"""The bug report of an app (``celeriac report``, the ``report`` inspect command) and its
settings with secrets masked (``inspect conf``).

Settings whose name says they hold a secret (``..._KEY``, ``..._PASSWORD``,
``..._TOKEN``...) print as ``********``; URLs print without their password.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
from typing import TYPE_CHECKING, Any

from .. import config
from ..brokers.base import redact
from ..brokers.registry import broker_class
from ..version import __version__

if TYPE_CHECKING:
    from .base import Celery

#: words in a setting's name that mark its value as a secret
SECRET_WORDS = ("API", "TOKEN", "KEY", "SECRET", "PASS", "SIGNATURE", "DATABASE")


def censor(key: str, value: Any) -> Any:
    """``value`` as a report may show it: URLs redacted, secrets masked."""
    if isinstance(value, str) and "://" in value:
        value = redact(value)
    if any(word in key.upper() for word in SECRET_WORDS) and not key.endswith("_url") \
            and value not in (None, "", False):
        return "********"
    return value


def settings(app: Celery, with_defaults: bool = False) -> dict[str, Any]:
    """The app's settings (only those changed from the defaults, unless ``with_defaults``),
    JSON-safe (anything else as its ``repr``) and censored."""
    out = {}
    for key, value in app.conf.items():
        if not with_defaults and key in config.DEFAULTS and config.DEFAULTS[key] == value:
            continue
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = repr(value)
        out[key] = censor(key, value)
    return out


def _versions() -> str:
    found = [f"celeriac:{__version__}"]
    for name in ("kombu", "redis", "amqp", "psycopg"):
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None) if module else None
        if version:
            found.append(f"{name}:{version}")
    found.append(f"py:{platform.python_version()}")
    return " ".join(found)


def _capabilities(url: str) -> str:
    """What the broker for ``url`` does natively (:class:`~..brokers.base.Capabilities`)."""
    try:
        found = dataclasses.asdict(broker_class(url).capabilities)
    except Exception as exc:  # an unknown scheme: the report still prints
        return f"unknown ({exc})"
    return " ".join(f"{name}:{'yes' if value else 'no'}" for name, value in found.items())


def bugreport(app: Celery) -> str:
    """Versions, platform, transport and the changed settings (censored), as Celery's
    ``app.bugreport()`` prints them."""
    backend = app.backend_url
    lines = [f"software -> {_versions()}",
             f"platform -> system:{platform.system()} arch:{platform.machine()} "
             f"kernel version:{platform.release()} imp:{sys.implementation.name}",
             f"settings -> transport:{app.broker_url.split('://', 1)[0]} "
             f"results:{redact(backend) if backend else 'disabled'}",
             f"broker   -> {_capabilities(app.broker_url)}", ""]
    lines += [f"{key}: {value!r}" for key, value in settings(app).items()]
    return "\n".join(lines) + "\n"
