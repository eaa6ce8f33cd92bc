"""Missed-run policy and fire identity: pure functions, no I/O.

Given an entry's state and the current instant, :func:`plan` decides which
fire times to send now and which to drop:

* ``missed="latest"`` (default): send the most recent due fire if it is at
  most ``max_lateness`` late; older missed fires are dropped.
* ``missed="all"``: send every due fire that is at most ``max_lateness`` late,
  oldest first (at most :data:`MAX_FIRES_PER_TICK` per tick).
* ``missed="skip"``: like ``latest`` but the default lateness is only
  :data:`SKIP_GRACE` seconds, so nothing missed during downtime is run.

The default ``max_lateness`` is the entry's period at that fire (the gap to
the following fire), capped at :data:`DEFAULT_MAX_LATENESS` (10 minutes).
:func:`fire_task_id` gives the deterministic task id of a fire, so a fire
re-sent after a crash carries the same id.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo

from .entries import StoredEntry

UTC = timezone.utc
DEFAULT_MAX_LATENESS = 600.0
SKIP_GRACE = 5.0
MAX_FIRES_PER_TICK = 1000
FIRE_NAMESPACE = uuid.UUID("7d3c1f0e-2b8a-4c55-9a61-0c7e5b1f2d44")


@dataclass(frozen=True)
class Plan:
    """What to do for one entry now: fires to send, and the newest fire to drop."""

    send: tuple[datetime, ...]
    drop_through: datetime | None
    next_fire: datetime | None


def fire_task_id(entry_name: str, fire_time: datetime) -> str:
    """The task id of a scheduled fire: the same for every scheduler and every retry."""
    stamp = fire_time.astimezone(UTC).isoformat(timespec="microseconds")
    return str(uuid.uuid5(FIRE_NAMESPACE, f"{entry_name}\n{stamp}"))


def max_lateness(entry: StoredEntry, fire: datetime, tz: tzinfo) -> float:
    """How late (seconds) ``fire`` may be sent."""
    if entry.spec.max_lateness is not None:
        return entry.spec.max_lateness
    period = entry.spec.schedule.period_at(fire, anchor=entry.anchor, tz=tz)
    cap = SKIP_GRACE if entry.spec.missed == "skip" else DEFAULT_MAX_LATENESS
    return min(period, cap)


def _lateness_bound(entry: StoredEntry) -> float:
    if entry.spec.max_lateness is not None:
        return entry.spec.max_lateness
    return SKIP_GRACE if entry.spec.missed == "skip" else DEFAULT_MAX_LATENESS


def due_fires(entry: StoredEntry, now: datetime, tz: tzinfo,
              limit: int = MAX_FIRES_PER_TICK) -> tuple[list[datetime], datetime | None]:
    """Fire times in ``(cursor, now]`` that could still be sent, and the first fire after now.

    Fires older than the entry's largest possible lateness are not listed;
    the caller drops them by advancing the cursor past the newest due fire.
    """
    schedule, anchor = entry.spec.schedule, entry.anchor
    horizon = now - timedelta(seconds=_lateness_bound(entry))
    start = max(entry.cursor(), horizon - timedelta(microseconds=1))
    due: list[datetime] = []
    fire = schedule.next_fire_after(start, anchor=anchor, tz=tz)
    while fire is not None and fire <= now:
        due.append(fire)
        if len(due) > limit:
            due.pop(0)
        fire = schedule.next_fire_after(fire, anchor=anchor, tz=tz)
    return due, fire


def plan(entry: StoredEntry, now: datetime, tz: tzinfo) -> Plan:
    """Decide which fires of ``entry`` to send at ``now`` (see the module docstring)."""
    if not entry.enabled:
        return Plan(send=(), drop_through=None, next_fire=None)
    due, upcoming = due_fires(entry, now, tz)
    if not due:
        # Every fire in (cursor, now], if any, is older than any lateness: drop them all.
        first = entry.spec.schedule.next_fire_after(entry.cursor(), anchor=entry.anchor, tz=tz)
        dropped = now if first is not None and first <= now else None
        return Plan(send=(), drop_through=dropped, next_fire=upcoming)
    on_time = [f for f in due if (now - f).total_seconds() <= max_lateness(entry, f, tz)]
    if entry.spec.missed == "all":
        send = on_time
    else:
        send = [due[-1]] if on_time and on_time[-1] == due[-1] else []
    drop_through = due[-1] if not send or send[-1] != due[-1] else None
    return Plan(send=tuple(send), drop_through=drop_through, next_fire=upcoming)

