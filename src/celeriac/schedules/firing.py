"""Turning a claimed fire into a task message, in the crash-safe order.

A fire goes through three steps: **claim** (store, atomic, state ``claimed``),
**publish** (broker, with the fire's deterministic task id) and **mark sent**
(store). A scheduler that dies between claim and mark leaves a ``claimed``
record; after ``beat_claim_timeout`` any scheduler takes it over and publishes
it again with the *same* task id. So a fire is never lost silently, and the
rare duplicate (publish succeeded, mark did not) carries the same task id,
which consumers can de-duplicate: delivery is at-least-once, like the rest of
celeriac.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from .entries import EntrySpec, jsonable
from .policy import fire_task_id
from .store import FireRecord, ScheduleStore

logger = logging.getLogger("celeriac.beat")

#: Header Celery 5.6+ beat adds to every message it sends.
BEAT_HEADERS = {"celery_beat_task": True}


def payload_of(spec: EntrySpec) -> dict[str, Any]:
    """What a fire publishes (kept in the fire record so a re-send is identical)."""
    return {"task": spec.task, "args": jsonable(list(spec.args)),
            "kwargs": jsonable(dict(spec.kwargs)), "options": jsonable(dict(spec.options))}


def new_record(spec: EntrySpec, fire_time: datetime, owner: str, now: datetime, *,
               manual: bool = False) -> FireRecord:
    task_id = str(uuid.uuid4()) if manual else fire_task_id(spec.name, fire_time)
    return FireRecord(entry=spec.name, fire_time=fire_time, task_id=task_id,
                      payload=payload_of(spec), owner=owner, claimed_at=now, manual=manual)


def publish(app: Any, record: FireRecord) -> Any:
    """``app.send_task`` for one fire, with the beat header and the fire's task id."""
    payload = record.payload
    options = dict(payload.get("options") or {})
    options.pop("task_id", None)
    headers = {**dict(options.pop("headers", None) or {}), **BEAT_HEADERS}
    return app.send_task(payload["task"], args=list(payload.get("args") or ()),
                         kwargs=dict(payload.get("kwargs") or {}), task_id=record.task_id,
                         headers=headers, **options)


def deliver(app: Any, store: ScheduleStore, record: FireRecord, now: datetime) -> bool:
    """Publish a claimed fire and mark it sent; on failure leave it claimed for recovery."""
    try:
        publish(app, record)
    except Exception:
        logger.exception("beat: publishing %s (fire %s, task id %s) failed; it stays claimed "
                         "and will be re-sent", record.entry, record.fire_time.isoformat(),
                         record.task_id)
        return False
    try:
        store.mark_sent(record.entry, record.fire_time, now)
    except Exception:
        logger.exception("beat: %s sent but not marked; it may be re-sent with task id %s",
                         record.entry, record.task_id)
    logger.info("beat: sent %s[%s] for %s", record.payload.get("task"), record.task_id,
                record.fire_time.isoformat())
    return True
