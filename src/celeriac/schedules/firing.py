"""Turning a claimed fire into a task message, in the crash-safe order.

A fire goes through three steps: **claim** (store, atomic, state ``claimed``),
**publish** (broker, with the fire's deterministic task id) and **mark sent**
(store). A scheduler that dies between claim and mark leaves a ``claimed``
record; once it is abandoned (:mod:`celeriac.beat.claims` says when) another
scheduler takes it over and publishes it again with the *same* task id. So a
fire is never lost silently. A live scheduler whose mark fails retries the
mark, never the publish; the one duplicate left is a scheduler dying (or
paused past ``beat_claim_timeout``) in the instant between the broker
accepting the message and the store recording it: that copy carries the same
task id and the warning of the scheduler that re-sends it names it.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime
from typing import Any

from .. import retry
from ..exceptions import OperationalError
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


#: What :func:`deliver` did: published and marked, published but not marked, or neither.
SENT_AND_MARKED, SENT_NOT_MARKED, NOT_SENT = "sent", "unmarked", ""
MARK_ATTEMPTS = 3


def mark(store: ScheduleStore, record: FireRecord, now: datetime,
         attempts: int = MARK_ATTEMPTS) -> bool:
    """Mark a published fire sent, trying a few times; False if the store kept refusing."""
    for attempt in range(attempts):
        try:
            store.mark_sent(record.entry, record.fire_time, now)
            return True
        except Exception:
            if attempt + 1 == attempts:
                logger.warning("beat: %s fire %s was sent (task id %s) but could not be "
                               "marked sent yet; retrying", record.entry,
                               record.fire_time.isoformat(), record.task_id, exc_info=True)
            else:
                time.sleep(0.05 * (attempt + 1))
    return False


def deliver(app: Any, store: ScheduleStore, record: FireRecord, now: datetime) -> str:
    """Publish a claimed fire and mark it sent; on failure leave it claimed for recovery.

    Returns :data:`SENT_AND_MARKED`, :data:`SENT_NOT_MARKED` (the caller must
    keep the claim alive and mark it later: re-sending it would send it twice)
    or :data:`NOT_SENT` (false: it stays claimed and is re-sent with the same
    task id).
    """
    try:
        publish(app, record)
    except OperationalError as exc:  # an outage: the process's watch logs it once
        logger.log(logging.DEBUG if retry.failing() else logging.ERROR,
                   "beat: publishing %s (fire %s, task id %s) failed (%s); it stays claimed "
                   "and will be re-sent", record.entry, record.fire_time.isoformat(),
                   record.task_id, exc)
        return NOT_SENT
    except Exception:
        logger.exception("beat: publishing %s (fire %s, task id %s) failed; it stays claimed "
                         "and will be re-sent", record.entry, record.fire_time.isoformat(),
                         record.task_id)
        return NOT_SENT
    marked = mark(store, record, now)
    logger.info("beat: sent %s[%s] for %s", record.payload.get("task"), record.task_id,
                record.fire_time.isoformat())
    return SENT_AND_MARKED if marked else SENT_NOT_MARKED
