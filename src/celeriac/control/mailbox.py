"""Celery's pidbox wire format: control requests, replies, and who a request is for.

A request goes to the fan-out exchange ``<control_exchange>.pidbox``
(``celery.pidbox``) with an empty routing key, persistent, with headers
``{"clock", "expires"}`` (epoch seconds after which workers ignore it) and
the JSON body ``{"method", "arguments", "destination", "pattern", "matcher"}``
plus ``"ticket"`` and ``"reply_to": {"exchange": "reply.celery.pidbox",
"routing_key": <oid>}`` when replies are wanted. Each worker that matches
replies to that direct exchange with headers ``{"ticket", "clock"}`` and the
body ``{"<node name>": <payload>}`` (see tests/fixtures/pidbox-redis.json).
"""

from __future__ import annotations

import fnmatch
import json
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

from ..brokers.base import Broadcast
from ..events.event import clock

DEFAULT_EXCHANGE = "celery"


def exchange_names(control_exchange: str | None) -> tuple[str, str]:
    """``(request exchange, reply exchange)``: ``celery.pidbox``, ``reply.celery.pidbox``."""
    base = control_exchange or DEFAULT_EXCHANGE
    return f"{base}.pidbox", f"reply.{base}.pidbox"


def request_message(exchange: str, method: str, arguments: dict[str, Any] | None,
                    destination: Sequence[str] | None, *, reply_exchange: str | None = None,
                    oid: str | None = None, timeout: float = 1.0, pattern: str | None = None,
                    matcher: str | None = None) -> tuple[Broadcast, str | None]:
    """The request and its ticket (None when no reply is wanted)."""
    body: dict[str, Any] = {"method": method, "arguments": dict(arguments or {}),
                            "destination": list(destination) if destination else None,
                            "pattern": pattern, "matcher": matcher}
    ticket = None
    if reply_exchange is not None and oid is not None:
        ticket = str(uuid.uuid4())
        body["ticket"] = ticket
        body["reply_to"] = {"exchange": reply_exchange, "routing_key": oid}
    headers = {"clock": clock.forward(), "expires": time.time() + timeout}
    message = Broadcast(exchange=exchange, routing_key="", body=json.dumps(body).encode(),
                        headers=headers, persistent=True)
    return message, ticket


def reply_message(request: dict[str, Any], hostname: str, payload: Any) -> Broadcast | None:
    """The reply to ``request`` (None when it asked for none)."""
    reply_to = request.get("reply_to")
    if not isinstance(reply_to, dict) or not request.get("ticket"):
        return None
    return Broadcast(exchange=str(reply_to.get("exchange")),
                     routing_key=str(reply_to.get("routing_key")),
                     body=json.dumps({hostname: payload}, default=repr).encode(),
                     headers={"ticket": request["ticket"], "clock": clock.forward()})


def decode(message: Broadcast) -> dict[str, Any] | None:
    """The request or reply body; None when it is not a JSON object."""
    try:
        body = json.loads(message.body)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def expired(message: Broadcast, now: float | None = None) -> bool:
    value = message.headers.get("expires")
    if not isinstance(value, (int, float)):
        return False
    return (time.time() if now is None else now) > float(value)


def addressed_to(request: dict[str, Any], hostname: str) -> bool:
    """Whether ``hostname`` is a destination of ``request`` (Celery's rules: a list of
    names, or ``pattern`` with ``matcher`` ``glob`` (default) or ``pcre``)."""
    destination = request.get("destination")
    pattern = request.get("pattern")
    if destination:
        return hostname in destination
    if pattern:
        if request.get("matcher") == "pcre":
            return re.search(str(pattern), hostname) is not None
        return fnmatch.fnmatch(hostname, str(pattern))
    return True
