"""The message size limit (``task_message_max_size``): what is measured, and when.

A message measures its body's bytes plus its headers as JSON (:func:`message_size`).
Producers skip the measure for a body far under the limit with only standard headers;
workers skip it when the envelope the broker read is small enough to bound the measure
(:data:`ENVELOPE_GROWTH`), and measure exactly otherwise (docs/security.md).
"""

from __future__ import annotations

import json

from .exceptions import MessageTooLarge
from .messages import STANDARD_HEADERS, Message

#: headers whose values are bounded (ids, names, 1 KiB reprs): a producer need not measure
_BOUNDED_HEADERS = frozenset((*STANDARD_HEADERS, "compression", "celeriac_seal"))


#: ``json.dumps(headers, default=repr)``'s encoder, made once (thread-safe: each call
#: makes its own circular-reference markers)
_SIZE_ENCODER = json.JSONEncoder(default=repr)


def message_size(message: Message) -> int:
    """What ``task_message_max_size`` measures: the body's bytes plus the headers as JSON."""
    try:
        headers = len(_SIZE_ENCODER.encode(message.headers))
    except (TypeError, ValueError):
        headers = 0
    return len(message.body) + headers


#: headroom below ``task_message_max_size`` under which a producer does not measure the
#: standard headers (their values are bounded: ids, names, 1 KiB reprs)
HEADER_HEADROOM = 1024 * 1024


#: how many times larger than the JSON envelope it was parsed from a message can measure
#: (:func:`message_size`): re-encoding parsed JSON with ``json.dumps``'s separators and
#: ASCII escapes grows it at most 4.5 times (``1e15`` becomes ``1000000000000000.0``, a
#: 2-byte UTF-8 character a 6-byte escape, ``,`` becomes ``, ``), a base64 or string
#: body decodes no larger, and body and headers are disjoint parts of the envelope
ENVELOPE_GROWTH = 5


def check_size(message: Message, limit: int | None, exact: bool = True,
               envelope: int | None = None) -> None:
    """Raise MessageTooLarge when ``message`` is over ``limit`` bytes (None/0: no limit).

    ``exact=False`` (producers, on every publish) skips encoding the headers when the
    body is more than :data:`HEADER_HEADROOM` under the limit and every header is a
    standard one (the seal's too). Workers measure exactly, unless ``envelope`` (the
    bytes of the JSON envelope ``message`` was parsed from) is at most ``limit /``
    :data:`ENVELOPE_GROWTH`: then the message cannot measure more than the limit."""
    if limit:
        if envelope is not None and envelope * ENVELOPE_GROWTH <= limit:
            return
        if not exact and len(message.body) + HEADER_HEADROOM < limit and (
                message.headers.keys() <= _BOUNDED_HEADERS):
            return
        size = message_size(message)
        if size > limit:
            raise MessageTooLarge(f"message of {size} bytes exceeds task_message_max_size "
                                  f"({limit} bytes)")
