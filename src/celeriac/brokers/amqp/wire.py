"""Celery's AMQP message format: a :class:`~celeriac.messages.Message` to and from py-amqp.

What kombu sends (``tests/fixtures/amqp-task-properties.json``): the task
headers as AMQP application headers, the serialized body as the content,
``content_type``/``content_encoding``, ``correlation_id`` (the task id),
``reply_to``, ``delivery_mode`` 2, ``priority`` and, with ``expires``,
``expiration`` in milliseconds. The kombu envelope fields that AMQP has no
place for travel as follows:

* ``delivery_tag`` (kombu's per-message uuid on Redis) as the AMQP
  ``message_id`` (kombu leaves it empty);
* ``delivery_info`` is rebuilt from the delivery's exchange and routing key;
  after a broker-side delay (exchange ``celery_delayed_*``) the 28 bits of the
  delay are cut from the routing key;
* ``body_encoding`` is always ``base64`` (the envelope's, not AMQP's);
* anything else, or a malformed field (a ``priority`` that is not an
  integer, a ``delivery_info`` that is not an object), goes in the
  ``x-celeriac-properties`` header and comes back unchanged, so the worker can
  name it when it dead-letters the message.

**Priorities are inverted.** celeriac serves 0 first on every broker; RabbitMQ
serves the highest first. The AMQP priority is ``9 - p``, so a Celery client's
urgent ``priority=9`` arrives here as 0 and a celeriac ``priority=0`` reaches a
Celery worker as 9: the intent survives in both directions.

Bookkeeping headers (stripped when a message is received): ``x-celeriac-dc``
(deliveries before this copy was published), ``x-celeriac-lc`` (of those, lost
ones) and ``x-celeriac-fd`` (first delivery, epoch seconds), written when a
message is given back by republishing; RabbitMQ's own ``x-death``,
``x-first-death-*``, ``x-last-death-*`` and ``x-delivery-count`` are stripped
too (``x-delivery-count`` is read: a quorum queue's count of returns).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import amqp

from ...messages import Message
from ..base import MAX_PRIORITY, clamp_priority

DC, LC, FD = "x-celeriac-dc", "x-celeriac-lc", "x-celeriac-fd"
EXTRA = "x-celeriac-properties"
#: the id of a rollover copy (:mod:`.holding`)
ROLL = "x-celeriac-roll"
DEAD_ID, DEAD_REASON, DEAD_QUEUE, DEAD_AT = ("x-celeriac-dead-id", "x-celeriac-dead-reason",
                                              "x-celeriac-dead-queue", "x-celeriac-dead-at")
_BOOKKEEPING = frozenset({DC, LC, FD, EXTRA, ROLL, DEAD_ID, DEAD_REASON, DEAD_QUEUE, DEAD_AT,
                          "x-death", "x-delivery-count", "x-first-death-exchange",
                          "x-first-death-queue", "x-first-death-reason",
                          "x-last-death-exchange", "x-last-death-queue",
                          "x-last-death-reason"})
_NATIVE = frozenset({"correlation_id", "reply_to", "delivery_mode", "expiration", "priority",
                     "delivery_info", "body_encoding", "delivery_tag"})


@dataclass(frozen=True)
class Counters:
    """What a message's earlier deliveries were (carried in bookkeeping headers)."""

    deliveries: int = 0
    lost: int = 0
    first_delivered_at: float | None = None


def amqp_priority(priority: int) -> int:
    """celeriac's 0-first priority as RabbitMQ's highest-first one."""
    return MAX_PRIORITY - clamp_priority(priority)


def celeriac_priority(value: Any) -> int:
    """RabbitMQ's highest-first priority property as celeriac's 0-first one."""
    if not isinstance(value, int) or isinstance(value, bool):
        value = 0
    return MAX_PRIORITY - max(0, min(MAX_PRIORITY, value))


def encode(message: Message, priority: int, *, counters: Counters | None = None,
           extra_headers: Mapping[str, Any] | None = None) -> amqp.Message:
    """The AMQP message for ``message`` with effective (0-first) ``priority``."""
    props = message.properties
    extra: dict[str, Any] = {k: v for k, v in props.items() if k not in _NATIVE}
    native: dict[str, Any] = {
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "priority": amqp_priority(priority),
    }
    delivery_mode = props.get("delivery_mode", 2)
    if delivery_mode in (1, 2):
        native["delivery_mode"] = delivery_mode
    else:
        native["delivery_mode"] = 2
        extra["delivery_mode"] = delivery_mode
    for key in ("correlation_id", "reply_to", "expiration"):
        value = props.get(key)
        if value is None:
            if key in props:
                extra[key] = None
            continue
        if isinstance(value, str):
            native[key] = value
        elif key == "expiration" and isinstance(value, int) and not isinstance(value, bool):
            native[key] = str(value)
            extra[key] = value
        else:
            extra[key] = value
    if "priority" in props:
        raw = props["priority"]
        if not (raw is None or (isinstance(raw, int) and not isinstance(raw, bool))):
            extra["priority"] = raw
    else:
        extra["priority:absent"] = True
    info = props.get("delivery_info")
    if info is not None and not (isinstance(info, dict) and set(info) <= {
            "exchange", "routing_key"}):
        extra["delivery_info"] = info
    tag = props.get("delivery_tag")
    if isinstance(tag, str):
        native["message_id"] = tag
    elif tag is not None:
        extra["delivery_tag"] = tag
    if "body_encoding" in props and props["body_encoding"] != "base64":
        extra["body_encoding"] = props["body_encoding"]
    headers = dict(message.headers)
    if extra:
        headers[EXTRA] = extra
    if counters is not None and (counters.deliveries or counters.lost):
        headers[DC] = counters.deliveries
        headers[LC] = counters.lost
        if counters.first_delivered_at is not None:
            headers[FD] = float(counters.first_delivered_at)
    if extra_headers:
        headers.update(extra_headers)
    native["application_headers"] = headers
    return amqp.Message(message.body, **native)


def decode(raw: amqp.Message, queue: str) -> tuple[Message, Counters, int]:
    """``(message, counters, returns)``: the celeriac message, the counters its headers
    carried and the server's count of earlier returns (quorum ``x-delivery-count``)."""
    props = dict(raw.properties)
    headers = dict(props.get("application_headers") or {})
    extra = headers.get(EXTRA)
    extra = dict(extra) if isinstance(extra, dict) else {}
    counters = Counters(_int(headers.get(DC)), _int(headers.get(LC)),
                        _float(headers.get(FD)))
    returns = _int(headers.get("x-delivery-count"))
    for key in _BOOKKEEPING.intersection(headers):
        del headers[key]
    info_raw = raw.delivery_info or {}
    exchange = str(info_raw.get("exchange") or "")
    routing_key = str(info_raw.get("routing_key") or queue)
    if exchange.startswith("celery_delayed_"):  # reached us through the delay layout
        routing_key = strip_delay_bits(routing_key)
    out: dict[str, Any] = {}
    for key in ("correlation_id", "reply_to"):
        if key in props:
            out[key] = _text(props[key])
    out["delivery_mode"] = props.get("delivery_mode", 2)
    if "expiration" in props:
        out["expiration"] = _text(props["expiration"])
    out["delivery_info"] = {"exchange": exchange, "routing_key": routing_key}
    if not extra.pop("priority:absent", False) and props.get("priority") is not None:
        out["priority"] = celeriac_priority(props["priority"])
    out["body_encoding"] = "base64"
    if "message_id" in props:
        out["delivery_tag"] = _text(props["message_id"])
    out.update(extra)
    body = raw.body if isinstance(raw.body, bytes) else str(raw.body).encode("utf-8")
    message = Message(headers=headers, properties=out, body=body,
                      content_type=_text(props.get("content_type")) or "application/json",
                      content_encoding=_text(props.get("content_encoding")) or "utf-8")
    return message, counters, returns


def strip_delay_bits(routing_key: str) -> str:
    """The routing key without kombu's 28 leading delay bits (``0.1.….<key>``)."""
    parts = routing_key.split(".", 28)
    if len(parts) == 29 and all(p in ("0", "1") for p in parts[:28]):
        return parts[28]
    return routing_key


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None
