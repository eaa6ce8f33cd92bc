"""``task_queue_targets``: each queue's target maximum time-to-start, in seconds.

``task_queue_targets = {"email_queue": "30s", "reminder_queue": "15m",
"saved_exports_queue": "1h"}`` (a number is seconds; ``timedelta`` works; units
``ms``, ``s``, ``m``, ``h``, ``d``). Time-to-start is measured from when a message
became ready (published, or due after its countdown/ETA) to the start of its run;
the worker logs a warning for each start over its queue's target, and the
metrics and ``celeriac status`` flag the queue (see docs/monitoring.md).
A malformed value stops start-up naming the setting and the queue.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from ..exceptions import ImproperlyConfigured

SETTING = "task_queue_targets"
_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0,
          "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")


def duration(value: Any) -> float:
    """``"30s"``, ``"15m"``, ``"1h"``, ``90``, ``timedelta(...)`` -> seconds (> 0)."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value.lower())):
        unit = match.group(2) or "s"
        if unit not in _UNITS:
            raise ValueError(f"unknown unit {unit!r} (use ms, s, m, h or d)")
        seconds = float(match.group(1)) * _UNITS[unit]
    else:
        raise ValueError(f"{value!r} is not a duration (e.g. 30, '30s', '15m', '1h')")
    if seconds <= 0:
        raise ValueError(f"{value!r} must be more than zero")
    return seconds


def queue_targets(value: Any) -> dict[str, float]:
    """The targets in seconds by queue from the setting's ``value``; raise
    ImproperlyConfigured naming a bad one."""
    raw = value or {}
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(f"setting {SETTING}: expected a dict of queue name -> "
                                   f"duration, got {raw!r}")
    out = {}
    for queue, value in raw.items():
        try:
            out[str(queue)] = duration(value)
        except ValueError as exc:
            raise ImproperlyConfigured(f"setting {SETTING}[{queue!r}]: {exc}") from None
    return out


def describe(seconds: float) -> str:
    """60 -> '1m', 90 -> '90s', 3600 -> '1h'."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
