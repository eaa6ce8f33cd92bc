"""Parsing what the Redis broker reads back: ``RECEIVE``'s reply and stored envelopes.

``RECEIVE`` (:mod:`.scripts`) returns ``[now, hint, batch]``; :func:`parse_receive`
turns the batch (records ``"queue_index token delivery_count lost_count size\n" +
envelope``) into deliveries (:func:`~celeriac.messages.parse_envelope`: by orjson
when installed, garbage becoming a header-less message the worker dead-letters); each
carries its envelope's size, which bounds the worker's size check.
"""

from __future__ import annotations

from typing import Any

from ...messages import parse_envelope
from ..base import Delivery


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
        index, token_b, dc_text, lc_text, size_text = batch[pos:eol].split(b" ")
        size = int(size_text)
        pos = eol + 1 + size
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
            lease_expires=expires, envelope_size=size,
        ))
    return out, hint
