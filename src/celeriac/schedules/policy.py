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
A plan also lists the fire times it does **not** send (``skipped``), so the
scheduler can name every missed fire in its warning; :func:`describe_skipped`
writes that list. :func:`takeover_grace` is how long after a fire's time a
scheduler that does not hold the lease sends it itself.
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
#: Skipped fires named one by one in a warning; older ones are named as a range.
NAMED_SKIPS = 100
#: A fire nobody sent this long after its time (or half its max lateness, if
#: less) is sent by a scheduler that does not hold the lease.
TAKEOVER_GRACE = 1.0
MIN_TAKEOVER_GRACE = 0.1
FIRE_NAMESPACE = uuid.UUID("7d3c1f0e-2b8a-4c55-9a61-0c7e5b1f2d44")


@dataclass(frozen=True)
class Plan:
    """What to do for one entry now: fires to send, and the newest fire to drop.

    ``skipped`` lists the fire times in ``(cursor, now]`` that are not sent,
    oldest first; when there are more than :data:`NAMED_SKIPS` before the
    window of sendable fires, ``unlisted`` is ``(a, b)``: every fire strictly
    between ``a`` and ``b`` is skipped too, without being listed.
    """

    send: tuple[datetime, ...]
    drop_through: datetime | None
    next_fire: datetime | None
    skipped: tuple[datetime, ...] = ()
    unlisted: tuple[datetime, datetime] | None = None


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


def _older_fires(entry: StoredEntry, before: datetime | None, now: datetime,
                 tz: tzinfo) -> tuple[list[datetime], tuple[datetime, datetime] | None]:
    """Fires after the cursor and before ``before`` (or at most ``now``), all skipped.

    At most :data:`NAMED_SKIPS` are listed; if there are more, the second value
    is the range ``(last listed, before or now)`` they fall strictly inside.
    """
    schedule, anchor = entry.spec.schedule, entry.anchor
    listed: list[datetime] = []
    fire = schedule.next_fire_after(entry.cursor(), anchor=anchor, tz=tz)
    while fire is not None and (fire < before if before is not None else fire <= now):
        if len(listed) == NAMED_SKIPS:
            return listed, (listed[-1], before if before is not None else now)
        listed.append(fire)
        fire = schedule.next_fire_after(fire, anchor=anchor, tz=tz)
    return listed, None


def plan(entry: StoredEntry, now: datetime, tz: tzinfo) -> Plan:
    """Decide which fires of ``entry`` to send at ``now`` (see the module docstring)."""
    if not entry.enabled:
        return Plan(send=(), drop_through=None, next_fire=None)
    due, upcoming = due_fires(entry, now, tz)
    if not due:
        # Every fire in (cursor, now], if any, is older than any lateness: drop them all.
        older, unlisted = _older_fires(entry, None, now, tz)
        return Plan(send=(), drop_through=now if older else None, next_fire=upcoming,
                    skipped=tuple(older), unlisted=unlisted)
    on_time = [f for f in due if (now - f).total_seconds() <= max_lateness(entry, f, tz)]
    if entry.spec.missed == "all":
        send = on_time
    else:
        send = [due[-1]] if on_time and on_time[-1] == due[-1] else []
    drop_through = due[-1] if not send or send[-1] != due[-1] else None
    older, unlisted = _older_fires(entry, due[0], now, tz)
    chosen = set(send)
    skipped = (*older, *(f for f in due if f not in chosen))
    return Plan(send=tuple(send), drop_through=drop_through, next_fire=upcoming,
                skipped=skipped, unlisted=unlisted)


def describe_skipped(decision: Plan) -> str:
    """The skipped fire times of a plan as text: every one named, oldest first."""
    names = [f.isoformat() for f in decision.skipped]
    if decision.unlisted is not None:
        after, before = decision.unlisted
        at = sum(1 for f in decision.skipped if f <= after)
        names.insert(at, f"every fire after {after.isoformat()} and before "
                         f"{before.isoformat()}")
    return ", ".join(names)


def skip_reason(entry: StoredEntry, decision: Plan, tz: tzinfo) -> str:
    """Why the policy did not send the skipped fires (for the warning)."""
    newest = decision.skipped[-1] if decision.skipped else None
    late = max_lateness(entry, newest, tz) if newest is not None else _lateness_bound(entry)
    if entry.spec.missed == "latest":
        return f"missed='latest' sends only the newest due fire, if at most {late:g}s late"
    return f"missed={entry.spec.missed!r} sends only fires at most {late:g}s late"


def takeover_grace(entry: StoredEntry, fire: datetime, tz: tzinfo) -> float:
    """Seconds after ``fire`` at which a scheduler without the lease sends it itself.

    :data:`TAKEOVER_GRACE`, or half the fire's max lateness if that is less
    (so a fire taken over is still on time), but at least
    :data:`MIN_TAKEOVER_GRACE`.
    """
    return max(MIN_TAKEOVER_GRACE, min(TAKEOVER_GRACE, max_lateness(entry, fire, tz) / 2))

