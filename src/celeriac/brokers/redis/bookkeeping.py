"""The Redis broker's bookkeeping outside its Lua scripts: queue names, dead letters, delays.

Key names are those documented at the top of :mod:`.broker` (all behind the
``global_keyprefix``); ``SEP`` is kombu's separator in priority list names
and bindings.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import redis

from ...messages import Message
from ..base import DeadLetter
from .replies import parse_envelope

SEP = "\x06\x16"
#: kombu's priority steps (step 0 is the bare queue name)
STEPS = (0, 3, 6, 9)
#: how far into each ready list ``read_delayed`` looks for noted ETA messages
SCAN_READY = 10_000


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def queue_names(client: redis.Redis, prefix: str) -> list[str]:
    """Queues published to by celeriac, plus those kombu bound (Celery's producers)."""
    names = {_text(n) for n in client.smembers(f"{prefix}_celeriac.queues")}
    for key in client.scan_iter(match=f"{prefix}_kombu.binding.*", count=1000):
        for member in client.smembers(key):
            name = _text(member).split(SEP)[-1]
            if name and "pidbox" not in name:
                names.add(name)
    return sorted(names)


def read_dead_letters(client: redis.Redis, prefix: str, queue: str | None,
                      limit: int) -> list[DeadLetter]:
    """Up to ``limit`` dead letters, oldest first (of ``queue``, or of every queue)."""
    index = f"{prefix}_celeriac.deadq.{queue}" if queue is not None else f"{prefix}_celeriac.dead"
    if limit <= 0:
        return []
    ids = [_text(i) for i in client.zrange(index, 0, limit - 1)]  # type: ignore[arg-type]
    if not ids:
        return []
    pipe = client.pipeline(transaction=False)
    for dead_id in ids:
        pipe.hgetall(f"{prefix}_celeriac.dead.{dead_id}")
    out = []
    records: list[Any] = pipe.execute()
    for dead_id, rec in zip(ids, records, strict=True):
        if not rec:
            continue
        out.append(DeadLetter(
            id=dead_id, queue=_text(rec[b"q"]), reason=_text(rec[b"r"]),
            message=parse_envelope(rec[b"m"]), delivery_count=int(rec[b"dc"]),
            lost_count=int(rec[b"lc"]),
            first_delivered_at=float(rec[b"fd"]) if rec.get(b"fd") else None,
            dead_at=float(rec[b"at"]),
        ))
    return out


def store_dead_letter(client: redis.Redis, prefix: str, dead_id: str, queue: str, step: int,
                      reason: str, envelope: str) -> None:
    """Put a message that was never leased into the dead-letter store (one MULTI/EXEC);
    the same fields ``DEAD_LETTER`` writes, with zero deliveries."""
    now = time.time()
    pipe = client.pipeline(transaction=True)
    pipe.hset(f"{prefix}_celeriac.dead.{dead_id}", mapping={
        "m": envelope, "q": queue, "s": step, "r": reason, "dc": 0, "lc": 0, "fd": "",
        "at": repr(now)})
    pipe.zadd(f"{prefix}_celeriac.dead", {dead_id: now})
    pipe.zadd(f"{prefix}_celeriac.deadq.{queue}", {dead_id: now})
    pipe.sadd(f"{prefix}_celeriac.queues", queue)
    pipe.execute()


def read_delayed(client: redis.Redis, prefix: str, queue: str,
                 limit: int) -> list[tuple[float, Message]]:
    """``(due, message)`` of the messages of ``queue`` that wait for their time, soonest
    first: the delayed set (a member is a 32-hex uid, a 2-digit step and the envelope)
    and, with ``delay_in_broker=False``, ETA messages on the ready lists that are noted
    in ``_celeriac.eta.<queue>`` (sha1 of the envelope -> due) and not yet parked."""
    rows: list[Any] = list(client.zrange(f"{prefix}_celeriac.delayed.{queue}", 0,
                                         max(0, limit - 1), withscores=True))
    out = []
    for member, due in rows:
        text = _text(member)
        try:
            out.append((float(due), Message.loads(text[34:])))
        except Exception:  # a malformed one is the worker's to dead-letter when due
            continue
    eta_rows: list[Any] = list(client.zrangebyscore(
        f"{prefix}_celeriac.eta.{queue}", time.time(), "+inf", withscores=True))
    noted = {_text(k): float(v) for k, v in eta_rows}
    if noted:
        for step in STEPS:
            key = f"{prefix}{queue}{SEP}{step}" if step else f"{prefix}{queue}"
            ready: list[Any] = list(client.lrange(key, 0, SCAN_READY - 1))
            for raw in ready:
                data = raw if isinstance(raw, bytes) else str(raw).encode()
                due = noted.get(hashlib.sha1(data).hexdigest())
                if due is not None:
                    try:
                        out.append((due, parse_envelope(raw)))
                    except Exception:
                        continue
        out.sort(key=lambda row: row[0])
    return out[:limit]
