"""One delivery's task request: every field of the message validated once, into one object.

:func:`parse_request` turns a :class:`~celeriac.messages.Message` (and, in a
worker, its :class:`~celeriac.brokers.base.Delivery`) into a
:class:`Request`. It checks the envelope, every header and property, the
body and the canvas signatures in ``embed`` (see :mod:`.fields`) and raises
:class:`~celeriac.exceptions.DecodeError` naming the first field that cannot
be used as written, or :class:`~celeriac.exceptions.ContentDisallowed`. So a
malformed message fails before anything runs, never halfway through.

A :class:`Request` *is* the task's ``self.request`` (a
:class:`~celeriac.app.context.Context` with Celery's fields): the worker
builds it once per delivery and the tracer pushes that same object, so
there is no second copy to drift. It adds what the worker reads:
``eta_at``/``expires_at`` (epoch seconds), ``name`` and ``embed``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..exceptions import DecodeError
from ..messages import Message, decode_body, to_timestamp
from . import fields
from .context import Context

if TYPE_CHECKING:
    from ..brokers.base import Delivery


class Request(Context):
    """A task request parsed from a message (``Task.request`` while it runs)."""

    #: the ``eta``/``expires`` headers as epoch seconds (None when absent)
    eta_at: float | None = None
    expires_at: float | None = None

    @property
    def name(self) -> str:
        """The task name (Celery's ``request.task``)."""
        return str(self.task)

    @property
    def embed(self) -> dict[str, Any]:
        """The body's third element as sent: callbacks, errbacks, chain, chord."""
        return {"callbacks": self.callbacks, "errbacks": self.errbacks, "chain": self.chain,
                "chord": self.chord}

    def __repr__(self) -> str:
        return f"<Request: {self.task}[{self.id}]>"


def _text_encoding(name: str) -> bool:
    """kombu decodes a body with ``codecs.decode(body, encoding)`` unless it is binary:
    an unknown codec or a text transform (``rot13``) cannot decode it. The first few
    names accepted are remembered (``utf-8`` nearly always; a codec cannot be removed)."""
    if name in _TEXT_ENCODINGS:
        return True
    if not _is_text_encoding(name):
        return False
    if len(_TEXT_ENCODINGS) < 32:
        _TEXT_ENCODINGS.add(name)
    return True


#: content encodings :func:`_text_encoding` accepted
_TEXT_ENCODINGS: set[str] = set()


def _is_text_encoding(name: str) -> bool:
    if name.lower() in ("binary", "ascii-8bit"):
        return True
    try:
        b"a".decode(name)  # (an empty input would skip the codec lookup)
    except LookupError:
        return False
    except (UnicodeError, ValueError):  # a real text codec that wants more than one byte
        return True
    return True


def _envelope(message: Message) -> None:
    if not isinstance(message.content_type, str) or not message.content_type:
        raise fields.bad("content-type", "a content type string", message.content_type)
    if not isinstance(message.content_encoding, str) or not _text_encoding(
            message.content_encoding):
        raise fields.bad("content-encoding", "a text encoding (utf-8) or binary",
                         message.content_encoding)
    if not isinstance(message.headers, dict):
        raise fields.bad("headers", "an object", message.headers)
    if not isinstance(message.properties, dict):
        raise fields.bad("properties", "an object", message.properties)


def _body(message: Message, accept: frozenset[str] | None, max_size: int | None = None
          ) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    payload = decode_body(message, accept, max_size)
    if isinstance(payload, dict) and "args" in payload:  # protocol 1 body
        args, kwargs, embed = payload.get("args", []), payload.get("kwargs", {}), None
    elif isinstance(payload, (list, tuple)) and len(payload) == 3:
        args, kwargs, embed = payload
    else:
        raise fields.bad("body", "[args, kwargs, embed]", payload)
    fields.arguments(args, kwargs)
    return list(args), kwargs, fields.embed(embed)


def _timelimit(value: Any) -> tuple[float | None, float | None]:
    if type(value) is list and len(value) == 2:  # as Celery sends it
        return value[0], value[1]
    hard, soft = [*list(value or ()), None, None][:2]
    return hard, soft


def parse_request(message: Message, accept: frozenset[str] | None = None, *,
                  delivery: Delivery | None = None, hostname: str | None = None,
                  max_size: int | None = None) -> Request:
    """Validate ``message`` and build its request; raise DecodeError naming the bad field.

    ``accept`` (content types) is enforced when given (ContentDisallowed);
    ``delivery`` supplies the queue, effective priority and redelivery flag of
    ``delivery_info``; ``hostname`` is the worker's node name; ``max_size``
    bounds a compressed body once decompressed (MessageTooLarge).
    """
    _envelope(message)
    headers, props = message.headers, message.properties
    fields.headers(headers)
    fields.properties(props)
    args, kwargs, embed = _body(message, accept, max_size)
    info = dict(props.get("delivery_info") or {})
    if delivery is not None:
        info["routing_key"] = delivery.queue
        info["priority"] = message.priority
        info["redelivered"] = bool(delivery.redelivered or info.get("redelivered"))
    get = headers.get
    task_id = headers["id"]
    request: Request = Request.of({
        "id": task_id, "task": headers["task"], "args": args, "kwargs": kwargs,
        "retries": int(get("retries") or 0), "eta": get("eta"), "expires": get("expires"),
        "group": get("group"), "group_index": get("group_index"), "root_id": get("root_id"),
        "parent_id": get("parent_id"),
        "correlation_id": props.get("correlation_id", task_id),
        "reply_to": props.get("reply_to"), "hostname": hostname, "delivery_info": info,
        "headers": headers, "properties": props, "timelimit": _timelimit(get("timelimit")),
        "origin": get("origin"), "ignore_result": bool(get("ignore_result")),
        "shadow": get("shadow"), "callbacks": embed.get("callbacks"),
        "errbacks": embed.get("errbacks"), "chain": embed.get("chain"),
        "chord": embed.get("chord"), "stamps": get("stamps") or {},
        "stamped_headers": get("stamped_headers"), "argsrepr": get("argsrepr"),
        "kwargsrepr": get("kwargsrepr"),
        "replaced_task_nesting": get("replaced_task_nesting") or 0,
        "lang": get("lang") or "py", "is_eager": False, "called_directly": False})
    try:
        request.eta_at = to_timestamp(headers.get("eta"))
        request.expires_at = to_timestamp(headers.get("expires"))
    except (TypeError, ValueError) as exc:  # checked above; kept for odd time zones
        raise DecodeError(f"headers.eta/expires: {exc}") from exc
    return request
