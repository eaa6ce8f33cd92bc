"""Parsing what the Redis broker reads back: ``RECEIVE``'s reply and stored envelopes.

``RECEIVE`` (:mod:`.scripts`) returns ``[now, hint, batch]``; :func:`parse_receive`
turns the batch (records ``"queue_index token delivery_count lost_count size\n" +
envelope``) into deliveries. orjson parses envelopes when installed
(``celeriac[fast]``); garbage becomes a header-less message the worker dead-letters.
"""

from __future__ import annotations

import re
from typing import Any

from ...exceptions import DecodeError
from ...messages import Message
from ..base import Delivery


def _optional_orjson() -> Any:
    """orjson when installed (``celeriac[fast]``); the stdlib parser is the fallback."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return orjson


_orjson = _optional_orjson()
#: a number orjson may not keep: it reads integers past 64 bits as floats, the stdlib
#: parser (and Celery's) keeps them exact; such envelopes take the stdlib path
_LONG_NUMBER = re.compile(rb"\d{19}")


def parse_envelope(raw: bytes | str) -> Message:
    """The message in ``raw``; garbage becomes a header-less message the worker dead-letters."""
    try:
        if _orjson is not None and not _LONG_NUMBER.search(
                raw if isinstance(raw, bytes) else raw.encode("utf-8")):
            try:
                return Message.from_envelope(_orjson.loads(raw))
            except _orjson.JSONDecodeError:
                pass  # not strict JSON for orjson (e.g. NaN): let the stdlib decide
        return Message.loads(raw)
    except DecodeError:
        body = raw if isinstance(raw, bytes) else raw.encode("utf-8")
        return Message(headers={}, properties={}, body=body)


def parse_receive(reply: list[Any], queues: list[str], owner: str,
                  lease_seconds: float) -> tuple[list[Delivery], float | None]:
    """``RECEIVE``'s reply as deliveries, plus the wait hint (seconds) or None."""
    now = float(reply[0])
    hint = float(reply[1]) if reply[1] else None
    expires = now + lease_seconds
    out: list[Delivery] = []
    batch: bytes = reply[2]
    pos = 0
    while pos < len(batch):
        eol = batch.index(b"\n", pos)
        index, token_b, dc_text, lc_text, size = batch[pos:eol].split(b" ")
        pos = eol + 1 + int(size)
        message, dc = parse_envelope(batch[eol + 1:pos]), int(dc_text)
        token = token_b.decode()
        info = message.properties.get("delivery_info")
        if dc > 1 and (info is None or isinstance(info, dict)):
            message = message.with_properties(delivery_info={**(info or {}),
                                                             "redelivered": True})
        out.append(Delivery(
            message=message, queue=queues[int(index) - 1],
            tag=message.delivery_tag or token, token=token, owner=owner,
            redelivered=dc > 1, delivery_count=dc, lost_count=int(lc_text),
            lease_expires=expires,
        ))
    return out, hint
