"""kombu's JSON envelope of a :class:`~celeriac.brokers.base.Broadcast`, both ways.

Brokers that carry broadcasts as text (Redis pub/sub and lists, the SQLite
and PostgreSQL broadcast tables) store exactly what kombu publishes on Redis:
``{"body": <base64>, "content-encoding", "content-type", "headers",
"properties": {"delivery_mode", "delivery_info": {"exchange", "routing_key"},
"priority": 0, "body_encoding": "base64", "delivery_tag"}}`` (see
tests/fixtures/events-redis.json and pidbox-redis.json).
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from ..exceptions import DecodeError
from .base import Broadcast


def to_envelope(message: Broadcast) -> dict[str, Any]:
    """The kombu envelope of ``message``."""
    return {
        "body": base64.b64encode(message.body).decode("ascii"),
        "content-encoding": message.content_encoding,
        "content-type": message.content_type,
        "headers": dict(message.headers),
        "properties": {
            "delivery_mode": 2 if message.persistent else 1,
            "delivery_info": {"exchange": message.exchange,
                              "routing_key": message.routing_key},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }


def dumps(message: Broadcast) -> str:
    return json.dumps(to_envelope(message))


def loads(raw: str | bytes, exchange: str = "", routing_key: str = "") -> Broadcast:
    """A Broadcast from kombu's envelope text (``exchange``/``routing_key`` fill in what
    the envelope lacks); raises DecodeError when it is not one."""
    try:
        env = json.loads(raw)
        props = env.get("properties") or {}
        info = props.get("delivery_info") or {}
        body = env.get("body", "")
        if props.get("body_encoding") == "base64":
            data = base64.b64decode(body)
        else:
            data = body.encode("utf-8") if isinstance(body, str) else json.dumps(body).encode()
        return Broadcast(
            exchange=str(info.get("exchange") or exchange),
            routing_key=str(info.get("routing_key") or routing_key),
            body=data, headers=dict(env.get("headers") or {}),
            content_type=str(env.get("content-type") or "application/json"),
            content_encoding=str(env.get("content-encoding") or "utf-8"),
            persistent=props.get("delivery_mode") == 2)
    except (ValueError, TypeError, AttributeError) as exc:
        raise DecodeError(f"not a kombu broadcast envelope: {exc}") from exc
