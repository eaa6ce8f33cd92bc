"""Celery message protocol v2: building, parsing and the JSON envelope.

A :class:`Message` is what a broker stores and delivers: Celery's headers, the
AMQP-style properties and the serialized body ``[args, kwargs, embed]``.
:meth:`Message.to_envelope` gives the JSON envelope kombu's Redis transport
stores (body base64-encoded, ``delivery_info`` and ``delivery_tag`` in the
properties), which is also how the embedded brokers store messages, so a
message looks the same on every broker.

:func:`task_message` builds the full 5.7 header set and
:func:`task_properties` the properties (the one place both are made; group
members derived from a template use it too); :func:`envelope_properties`
completes them for storage. A delivered message is validated and turned into
a task request by :func:`celeriac.app.request.parse_request`. Accessors here
never raise on malformed fields (a bad ``priority`` reads as 0), so a broker
can store, lease and dead-letter any message.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from . import serialization
from .exceptions import DecodeError

EMPTY_EMBED: dict[str, Any] = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def origin() -> str:
    """Celery's ``origin`` header: ``gen<pid>@<host>``."""
    return _origin(os.getpid())


@functools.lru_cache(maxsize=4)
def _origin(pid: int) -> str:
    return f"gen{pid}@{socket.gethostname()}"


#: uuid4 texts made from os.urandom 64 at a time; ``list.pop`` is atomic,
#: so two threads never take the same one, and a forked child starts with none of its
#: parent's (it would repeat them)
_RANDOM: list[str] = []
os.register_at_fork(after_in_child=_RANDOM.clear)


#: the uuid4 variant digit for a random hex digit (its two top bits set to 10)
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def uuid4_text() -> str:
    """``str(uuid.uuid4())`` without building a UUID object: 122 random bits from
    ``os.urandom``, the version and variant bits set as uuid4 sets them (ids and
    delivery tags of every message). Made 64 at a time; the pop is one call."""
    try:
        return _RANDOM.pop()
    except IndexError:
        block = os.urandom(16 * 64).hex()
        ids = [f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"
               for h in [block[i:i + 32] for i in range(0, len(block), 32)]]
        _RANDOM.extend(ids[1:])
        return ids[0]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def to_timestamp(value: datetime | str | float | None) -> float | None:
    """Convert an ETA/expiry (datetime, ISO text or epoch seconds) to epoch seconds."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, ISO 8601 text or epoch seconds, got {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


@dataclass(frozen=True)
class Message:
    """One task (or control) message as brokers store and deliver it."""

    headers: dict[str, Any]
    properties: dict[str, Any]
    body: bytes
    content_type: str = serialization.JSON
    content_encoding: str = "utf-8"

    @property
    def task_id(self) -> str | None:
        """The ``id`` header; None when absent or not text (validated elsewhere)."""
        value = self.headers.get("id")
        return value if isinstance(value, str) else None

    @property
    def task_name(self) -> str | None:
        """The ``task`` header; None when absent or not text (validated elsewhere)."""
        value = self.headers.get("task")
        return value if isinstance(value, str) else None

    @property
    def delivery_tag(self) -> str:
        return str(self.properties.get("delivery_tag", ""))

    @property
    def priority(self) -> int:
        """The ``priority`` property; 0 when absent or not an integer (validated elsewhere)."""
        value = self.properties.get("priority")
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    def to_envelope(self, queue: str | None = None,
                    priority: int | None = None) -> dict[str, Any]:
        """Return kombu's JSON envelope for this message (the Redis list element);
        ``priority`` is the broker's effective one, when it decided one."""
        props = envelope_properties(self.properties, queue, priority)
        return {
            "body": base64.b64encode(self.body).decode("ascii"),
            "content-encoding": self.content_encoding,
            "content-type": self.content_type,
            "headers": self.headers,
            "properties": props,
        }

    def dumps(self, queue: str | None = None) -> str:
        """The envelope as JSON text."""
        return json.dumps(self.to_envelope(queue))

    @classmethod
    def from_envelope(cls, env: dict[str, Any]) -> Message:
        """Parse kombu's envelope; tolerates a raw (not base64) body and missing fields."""
        if not isinstance(env, dict):
            raise DecodeError("message envelope is not a JSON object")
        props = env.get("properties") or {}
        headers = env.get("headers") or {}
        if not isinstance(props, dict) or not isinstance(headers, dict):
            raise DecodeError("message headers/properties are not objects")
        raw = env.get("body", "")
        if props.get("body_encoding") == "base64":
            try:
                body = base64.b64decode(raw, validate=True)
            except Exception as exc:
                raise DecodeError(f"body is not valid base64: {exc}") from exc
        elif isinstance(raw, str):
            body = raw.encode("utf-8")
        elif isinstance(raw, bytes):
            body = raw
        else:
            body = json.dumps(raw).encode("utf-8")
        return cls(
            headers=headers,
            properties=props,
            body=body,
            content_type=env.get("content-type") or serialization.JSON,
            content_encoding=env.get("content-encoding") or "utf-8",
        )

    @classmethod
    def loads(cls, text: str | bytes) -> Message:
        """Parse the envelope from JSON text (by orjson when installed:
        :func:`~celeriac.serialization.loads_exact`); raises DecodeError on garbage."""
        try:
            env = serialization.loads_exact(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise DecodeError(f"message is not valid JSON: {exc}") from exc
        return cls.from_envelope(env)

    def with_headers(self, **headers: Any) -> Message:
        return replace(self, headers={**self.headers, **headers})

    def with_properties(self, **props: Any) -> Message:
        return replace(self, properties={**self.properties, **props})


def task_message(
    name: str,
    task_id: str,
    args: Any = (),
    kwargs: dict[str, Any] | None = None,
    *,
    eta: datetime | None = None,
    expires: datetime | None = None,
    retries: int = 0,
    group_id: str | None = None,
    group_index: int | None = None,
    time_limit: float | None = None,
    soft_time_limit: float | None = None,
    root_id: str | None = None,
    parent_id: str | None = None,
    argsrepr: str | None = None,
    kwargsrepr: str | None = None,
    shadow: str | None = None,
    ignore_result: bool = False,
    callbacks: list[dict[str, Any]] | None = None,
    errbacks: list[dict[str, Any]] | None = None,
    chain: list[dict[str, Any]] | None = None,
    chord: dict[str, Any] | None = None,
    headers: dict[str, Any] | None = None,
    priority: int | None = None,
    reply_to: str | None = None,
    queue: str | None = None,
    serializer: str = "json",
    replaced_task_nesting: int = 0,
    stamped_headers: list[str] | None = None,
    stamps: dict[str, Any] | None = None,
    compression: str | None = None,
) -> Message:
    """Build a protocol v2 task message with the full Celery 5.7 header set."""
    args = list(args or ())
    kwargs = dict(kwargs or {})
    embed = {"callbacks": callbacks, "errbacks": errbacks, "chain": chain, "chord": chord}
    body, content_type, encoding = serialization.dumps([args, kwargs, embed], serializer)
    hdrs: dict[str, Any] = {
        "lang": "py",
        "task": name,
        "id": task_id,
        "shadow": shadow,
        "eta": eta.isoformat() if eta else None,
        "expires": expires.isoformat() if expires else None,
        "group": group_id,
        "group_index": group_index,
        "retries": retries,
        "timelimit": [time_limit, soft_time_limit],
        "root_id": root_id or task_id,
        "parent_id": parent_id,
        "argsrepr": argsrepr if argsrepr is not None else saferepr(tuple(args)),
        "kwargsrepr": kwargsrepr if kwargsrepr is not None else saferepr(kwargs),
        "origin": origin(),
        "ignore_result": ignore_result,
        "replaced_task_nesting": replaced_task_nesting,
        "stamped_headers": stamped_headers,
        "stamps": stamps or {},
    }
    if headers:
        hdrs.update(headers)
    if compression:
        body, hdrs["compression"] = serialization.compress(body, compression)
    ttl = None
    if expires is not None:
        ttl = str(max(0, int((expires - utcnow()).total_seconds() * 1000)))
    props = task_properties(task_id, reply_to=reply_to, queue=queue, priority=priority,
                            expiration=ttl)
    return Message(hdrs, props, body, content_type, encoding)


def task_properties(task_id: str, *, reply_to: str | None = None, queue: str | None = None,
                    priority: int | None = None, expiration: str | None = None
                    ) -> dict[str, Any]:
    """The properties of a task message, in kombu's key order (the one place they are made)."""
    props: dict[str, Any] = {
        "correlation_id": task_id,
        "reply_to": reply_to,
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": queue or "celery"},
        "priority": priority or 0,
        "body_encoding": "base64",
        "delivery_tag": uuid4_text(),
    }
    if expiration is not None:
        props["expiration"] = expiration
        # keep kombu's key order: expiration right after delivery_mode
        props = {k: props[k] for k in _PROP_ORDER if k in props}
    return props


def envelope_properties(properties: dict[str, Any], queue: str | None = None,
                        priority: int | None = None) -> dict[str, Any]:
    """``properties`` completed as kombu stores them (delivery mode, routing, tag, base64).

    ``priority`` (the broker's effective one) replaces a valid stored priority;
    a malformed ``priority`` or ``delivery_info`` is kept as sent, so the worker
    can name it when it dead-letters the message.
    """
    props = dict(properties)
    props.setdefault("delivery_mode", 2)
    info = props.get("delivery_info")
    if info is None or isinstance(info, dict):
        info = dict(info or {})
        info.setdefault("exchange", "")
        if queue is not None:
            info.setdefault("routing_key", queue)
        props["delivery_info"] = info
    current = props.get("priority")
    if current is None or (isinstance(current, int) and not isinstance(current, bool)):
        props["priority"] = (current or 0) if priority is None else priority
    props["body_encoding"] = "base64"
    if "delivery_tag" not in props:
        props["delivery_tag"] = uuid4_text()
    return props


#: the headers Celery 5.7 always sends, in its order
STANDARD_HEADERS = (
    "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
    "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result",
    "replaced_task_nesting", "stamped_headers", "stamps",
)

_PROP_ORDER = (
    "correlation_id",
    "reply_to",
    "delivery_mode",
    "expiration",
    "delivery_info",
    "priority",
    "body_encoding",
    "delivery_tag",
)


def saferepr(value: Any, maxlen: int = 1024, show: Callable[[Any], str] = repr) -> str:
    """``repr`` (or ``show``) cut to ``maxlen`` characters, as Celery's argsrepr is."""
    try:
        text = show(value)
    except Exception as exc:  # a broken __repr__ must not stop a publish
        text = f"<unrepresentable {type(value).__name__}: {exc}>"
    return text if len(text) <= maxlen else text[: maxlen - 3] + "..."


def decode_body(message: Message, accept: frozenset[str] | None = None,
                max_size: int | None = None) -> Any:
    """The deserialized body (decompressed first when the ``compression`` header says so);
    ``accept`` (content types) is enforced when given, ``max_size`` bounds the
    decompressed body (MessageTooLarge)."""
    body = message.body
    if message.headers.get("compression"):
        limit = max_size or serialization.MAX_DECOMPRESSED
        body = serialization.decompress(body, str(message.headers["compression"]), limit)
    return serialization.loads(body, message.content_type, accept)


def parse_envelope(raw: bytes | str) -> Message:
    """Parse a stored envelope leniently: garbage becomes a header-less message.

    Brokers use this when delivering, so one undecodable message never fails a
    whole ``receive`` batch: the worker sees no ``task``/``id`` header and
    dead-letters it as ``decode_error`` with the raw bytes kept in the body.
    """
    try:
        return Message.loads(raw)
    except DecodeError:
        body = raw if isinstance(raw, bytes) else raw.encode("utf-8")
        return Message(headers={}, properties={}, body=body)


def encode_envelope(message: Message, queue: str, priority: int) -> str:
    """The JSON envelope stored for ``message``, carrying its effective priority."""
    return json.dumps(message.to_envelope(queue, priority))
