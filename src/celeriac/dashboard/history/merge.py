"""Folding Celery task events into a :class:`TaskRecord` and its attempts.

Events of one task can arrive out of order (the client's ``task-sent`` and
the worker's ``task-received`` come from different processes), so fields are
filled whatever the order, and ``state`` follows the event with the latest
timestamp; at equal timestamps the more final state wins (Celery's
precedence). A retry is the same task id delivered again: each delivery is an
:class:`Attempt` numbered by the ``retries`` count of its ``task-received``.
"""

from __future__ import annotations

from typing import Any

from ... import states
from .records import Attempt, TaskRecord

#: Task event type -> the state it means (``task-sent`` is Celery's PENDING-like SENT).
EVENT_STATES = {
    "task-sent": "SENT",
    "task-received": states.RECEIVED,
    "task-started": states.STARTED,
    "task-succeeded": states.SUCCESS,
    "task-failed": states.FAILURE,
    "task-rejected": states.REJECTED,
    "task-revoked": states.REVOKED,
    "task-retried": states.RETRY,
}

FINAL_STATES = frozenset({states.SUCCESS, states.FAILURE, states.REVOKED, states.REJECTED})

_ORDER = {"SENT": 0, states.PENDING: 0, states.RECEIVED: 1, states.STARTED: 2,
          states.RETRY: 3, states.REJECTED: 4, states.REVOKED: 5, states.FAILURE: 6,
          states.SUCCESS: 7}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else repr(value)


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _wins(new_state: str, ts: float, record: TaskRecord, new_attempt: bool) -> bool:
    if new_attempt:  # a retry's new delivery starts the task's story again
        return True
    if record.state in FINAL_STATES and _ORDER.get(new_state, 0) <= 1:
        return False  # a late ``task-sent``/``task-received`` never reopens a finished task
    if ts > record.state_ts:
        return True
    if ts == record.state_ts:
        return _ORDER.get(new_state, 0) >= _ORDER.get(record.state, 0)
    return False


def attempt_for(attempts: dict[int, Attempt], record: TaskRecord, kind: str) -> Attempt:
    """The attempt an event of ``kind`` belongs to: a retry's ``task-retried`` arrives after
    the next delivery was sent (and maybe received), so it closes the attempt still running."""
    numbers = sorted(attempts, reverse=True)
    if kind == "task-started":
        candidates = [n for n in numbers if attempts[n].started_at is None]
    else:
        candidates = [n for n in numbers if attempts[n].started_at is not None
                      and attempts[n].finished_at is None]
        candidates += [n for n in numbers if attempts[n].finished_at is None]
    number = candidates[0] if candidates else record.retries
    if number not in attempts:
        attempts[number] = Attempt(task_id=record.task_id, attempt=number)
    return attempts[number]


def apply_event(record: TaskRecord, attempts: dict[int, Attempt],
                event: dict[str, Any]) -> None:
    """Fold one task event into ``record`` and ``attempts`` (keyed by attempt number)."""
    kind = str(event.get("type"))
    new_state = EVENT_STATES.get(kind)
    if new_state is None:
        return
    ts = _float(event.get("timestamp")) or 0.0
    record.ts = min(record.ts, ts) if record.ts else ts
    record.updated_at = max(record.updated_at, ts)
    for key in ("name", "root_id", "parent_id", "queue", "routing_key"):
        value = event.get(key)
        if value:
            setattr(record, key, str(value))
    for key in ("args", "kwargs", "eta", "expires"):
        if event.get(key) is not None:
            setattr(record, key, _text(event.get(key)))
    host = event.get("hostname")
    prior_retries = record.retries
    if kind == "task-sent":
        record.sent_at = ts if record.sent_at is None else min(record.sent_at, ts)
        retries = int(event.get("retries") or 0)
        record.retries = max(record.retries, retries)
    elif kind == "task-received":
        retries = int(event.get("retries") or 0)
        record.retries = max(record.retries, retries)
        attempt = attempts.setdefault(retries, Attempt(task_id=record.task_id, attempt=retries))
        attempt.received_at = ts
        attempt.worker = _text(host)
        if record.received_at is None or retries == record.retries:
            record.received_at = ts
        record.worker = _text(host) or record.worker
    else:
        attempt = attempt_for(attempts, record, kind)
        if host and not str(host).startswith("gen"):
            attempt.worker = attempt.worker or _text(host)
            record.worker = record.worker or _text(host)
        if kind == "task-started":
            attempt.started_at = ts
            attempt.state = states.STARTED
            record.started_at = ts
        else:
            attempt.finished_at = ts
            attempt.state = new_state
            if kind == "task-succeeded":
                record.result = _text(event.get("result"))
                record.runtime = _float(event.get("runtime"))
                attempt.runtime = record.runtime
                record.exception = None
            elif kind in ("task-failed", "task-retried"):
                record.exception = _text(event.get("exception"))
                record.traceback = _text(event.get("traceback"))
                attempt.exception = record.exception
            elif kind == "task-revoked":
                how = ("expired" if event.get("expired") else
                       f"terminated (signal {event.get('signum')})" if event.get("terminated")
                       else "revoked")
                record.exception = record.exception or how
                attempt.exception = how
            if kind != "task-retried":
                record.finished_at = ts
    if _wins(new_state, ts, record, record.retries > prior_retries):
        record.state = new_state
        record.state_ts = ts


def apply_result(record: TaskRecord, meta: dict[str, Any], now: float) -> bool:
    """Fill ``record`` from a result-store meta (Celery's format); True if it changed."""
    status = str(meta.get("status") or "")
    if not status or status == states.PENDING:
        return False
    changed = False
    if status != record.state and (record.state not in FINAL_STATES or status in FINAL_STATES):
        record.state = status
        record.state_ts = max(record.state_ts, now)
        changed = True
    if status == states.SUCCESS and record.result is None:
        record.result = repr(meta.get("result"))
        changed = True
    if status in (states.FAILURE, states.REVOKED) and record.exception is None:
        exc = meta.get("result")
        if isinstance(exc, dict) and "exc_type" in exc:
            message = exc.get("exc_message")
            if isinstance(message, (list, tuple)):
                message = ", ".join(repr(m) for m in message)
            record.exception = f"{exc['exc_type']}({message or ''})"
        else:
            record.exception = _text(exc)
        record.traceback = record.traceback or _text(meta.get("traceback"))
        changed = True
    for key in ("name", "queue", "worker"):
        if meta.get(key) and not getattr(record, key):
            setattr(record, key, str(meta[key]))
            changed = True
    if record.state in FINAL_STATES and record.finished_at is None:
        record.finished_at = now
        changed = True
    if changed:
        record.updated_at = now
    return changed
