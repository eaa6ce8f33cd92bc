"""Celery's event format: one event dict, its routing key, and the Lamport clock.

An event is a flat JSON object: ``hostname``, ``utcoffset``, ``pid``,
``clock`` (this process's Lamport clock), the type's own fields,
``timestamp`` (epoch seconds) and ``type`` (``task-succeeded``,
``worker-heartbeat``...). It is published to the ``celeryev`` exchange with
the type as routing key, dashes turned into dots (``task.succeeded``); a list
of events is published as ``task.multi`` (Celery's worker batches task
events that way, and receivers accept both).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

#: The exchange of events (Celery's ``event_exchange`` default).
EXCHANGE = "celeryev"


class LamportClock:
    """Celery's logical clock: ``forward()`` on each send, ``adjust(other)`` on receive."""

    def __init__(self, initial: int = 0) -> None:
        self.value = initial
        self._lock = threading.Lock()

    def forward(self) -> int:
        with self._lock:
            self.value += 1
            return self.value

    def adjust(self, other: int) -> int:
        with self._lock:
            self.value = max(self.value, int(other)) + 1
            return self.value


#: This process's clock (events, control requests and replies share it, as in Celery).
clock = LamportClock()


def _reset_after_fork() -> None:
    """A child forked while another thread held the clock's lock gets a free one."""
    clock._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def utcoffset() -> float:
    """Hours west of UTC, as Celery reports it (``0.0`` on a UTC host)."""
    offset = time.altzone if time.daylight and time.localtime().tm_isdst else time.timezone
    return offset / 3600.0


def Event(type: str, _fields: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """An event of ``type`` with ``fields`` (Celery's ``celery.events.Event``)."""
    event = dict(_fields or {}, **fields)
    event.setdefault("timestamp", time.time())
    event["type"] = type
    return event


def routing_key(event_type: str) -> str:
    """``task-succeeded`` -> ``task.succeeded``."""
    return event_type.replace("-", ".")


def group_of(event_type: str) -> str:
    """``task-succeeded`` -> ``task``."""
    return event_type.split("-", 1)[0]


def stamp(event_type: str, hostname: str, fields: dict[str, Any],
          pid: int | None = None) -> dict[str, Any]:
    """The full event as a sender publishes it (field order as Celery's)."""
    event: dict[str, Any] = {"hostname": hostname, "utcoffset": utcoffset(),
                             "pid": os.getpid() if pid is None else pid,
                             "clock": clock.forward()}
    event.update(fields)
    event["timestamp"] = fields.get("timestamp", time.time())
    event["type"] = event_type
    return event
