"""The plain ``delay()`` lane on RabbitMQ: a task's publish rendered once, filled per call.

:mod:`celeriac.app.templates` builds a plain call (``task.delay(*args)``, no
options) from a per-task template of what the broker is given, cut where the
task id, delivery tag, body and argument reprs go. Here that is
:meth:`PlainLane.render_envelope`'s ``(envelope, text)``:

* the text is the JSON list ``[task id, delivery tag, base64 body, argsrepr,
  kwargsrepr]``: the parts of one call that change;
* the :class:`Envelope` is everything else, rendered once: the exchange and
  routing key the normal path would choose (:func:`..declared.exchange_route`),
  the queues it would declare first, and the content header's property bytes
  cut where those values go (the ``id``/``root_id``/``argsrepr``/``kwargsrepr``
  headers, ``correlation_id``, ``message_id``), with the lengths to fill in.

A call's publish (:class:`Pusher`, :meth:`PlainLane.publish_rendered`) fills
the envelope: the ``basic.publish`` frames in one socket write, then the
publisher confirm read by :mod:`.confirming`. The guarantees are the normal
path's: the queues are declared again on a new connection, ``delay()``
returns after RabbitMQ confirmed the message, a ``basic.nack`` raises, a lost
connection raises for the caller's retry policy. A message whose variable
parts sit anywhere else (inside a nested header) gets no envelope, so its
task takes the normal path. TLS connections publish through py-amqp.
"""

from __future__ import annotations

import json
from binascii import a2b_base64, b2a_base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from struct import Struct
from typing import TYPE_CHECKING, Any

import amqp
from amqp.exceptions import RecoverableConnectionError

from ... import retry
from ...messages import Message
from ..base import redact
from ..declared import exchange_route, to_declare
from . import frames, wire
from .connection import RETRYABLE_ERRORS, retrying

if TYPE_CHECKING:
    from .connection import Link

_U8, _U16, _U32 = Struct(">B"), Struct(">H"), Struct(">I")
#: the variable parts, in the order of the text: task id, delivery tag, body, reprs
ID, TAG, BODY, ARGS, KWARGS = range(5)
Piece = bytes | int  # literal bytes, or the number of the value that goes there


@dataclass(frozen=True, eq=False)
class Envelope:
    """A message's publish with its variable parts left open (see the module docstring)."""

    exchange: str
    routing_key: str
    declare: tuple[str, ...]
    #: property flags and the properties before the headers table
    head: bytes
    #: the headers table's entries (long-string values open), None: no table
    table: tuple[Piece, ...] | None
    #: bytes of the table's literal pieces
    table_fixed: int
    #: the properties after the table (short-string values open)
    tail: tuple[Piece, ...]
    #: the rendered message's properties and variable values (the py-amqp path)
    properties: dict[str, Any]
    values: tuple[str, ...]
    #: the pieces above as one list to fill: literals, and where the table's length and
    #: the values go (``(index, value number)`` of long and short strings)
    parts: tuple[bytes, ...] = field(init=False, repr=False)
    size_at: int = field(init=False, repr=False)
    long_slots: tuple[tuple[int, int], ...] = field(init=False, repr=False)
    short_slots: tuple[tuple[int, int], ...] = field(init=False, repr=False)
    #: the ``basic.publish`` method frame of the last channel number
    _method: list[tuple[int, bytes]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        parts, longs, shorts, size_at = [self.head], [], [], -1
        if self.table is not None:
            size_at = len(parts)
            parts.append(b"")
            for piece in self.table:
                if isinstance(piece, int):
                    longs.append((len(parts), piece))
                parts.append(piece if isinstance(piece, bytes) else b"")
        for piece in self.tail:
            if isinstance(piece, int):
                shorts.append((len(parts), piece))
            parts.append(piece if isinstance(piece, bytes) else b"")
        for name, value in (("parts", tuple(parts)), ("size_at", size_at),
                            ("long_slots", tuple(longs)), ("short_slots", tuple(shorts))):
            object.__setattr__(self, name, value)

    def method(self, channel: int) -> bytes:
        """The ``basic.publish`` method frame on ``channel``."""
        cached = self._method
        if not cached or cached[0][0] != channel:
            cached[:] = [(channel, frames.method_frame(channel, self.exchange,
                                                       self.routing_key))]
        return cached[0][1]

    def content(self, channel: int, values: Sequence[bytes], body: bytes,
                frame_max: int) -> bytes:
        """The content header and body frames with ``values`` filled in."""
        parts = list(self.parts)
        size = self.table_fixed
        for at, slot in self.long_slots:
            value = values[slot]
            parts[at] = _U32.pack(len(value)) + value
            size += 4 + len(value)
        for at, slot in self.short_slots:
            value = values[slot]
            parts[at] = _U8.pack(len(value)) + value
        if self.size_at >= 0:
            parts[self.size_at] = _U32.pack(size)
        return frames.content_frames(channel, b"".join(parts), body, frame_max)

    def message(self, values: Sequence[str], body: bytes) -> amqp.Message:
        """The ``amqp.Message`` with ``values`` filled in (for py-amqp's publish)."""
        swap = {old: new for old, new in zip(self.values, values, strict=True)
                if old is not None}
        props = {k: swap.get(v, v) if isinstance(v, str) else v
                 for k, v in self.properties.items() if k != "application_headers"}
        headers = self.properties.get("application_headers")
        if headers is not None:
            props["application_headers"] = {
                k: swap.get(v, v) if isinstance(v, str) else v for k, v in headers.items()}
        return amqp.Message(body, **props)


def render(message: Message, msg: amqp.Message, route: tuple[str, str],
           declare: tuple[str, ...]) -> tuple[Envelope | None, str]:
    """``(envelope, text)`` of ``message`` (rendered as ``msg``); no envelope, and a text
    without the values, when its variable parts cannot be cut out of the properties."""
    headers = message.headers
    values = (headers.get("id"), message.properties.get("delivery_tag"), "",
              headers.get("argsrepr"), headers.get("kwargsrepr"))
    if not all(isinstance(v, str) for v in values):
        return None, ""
    props = msg.properties
    where: dict[str, int] = {v: i for i, v in enumerate(values)  # type: ignore[misc]
                             if i != BODY}
    head: list[bytes] = []
    table: list[Piece] | None = None
    tail: list[Piece] = []
    flags, bit = 0, 0x8000
    for name, kind in frames.PROPERTY_ORDER:
        value = props.get(name)
        if value is not None:
            flags |= bit
            out = head if table is None and kind != "F" else tail
            if kind == "F":
                table = _table(value, where)
            elif kind == "s" and isinstance(value, str) and value in where and table is not None:
                tail.append(where[value])
            elif kind == "s":
                out.append(frames.short_bytes(value))
            elif kind == "o":
                out.append(_U8.pack(value))
            else:
                out.append(frames.encode_properties({name: value})[2:])
        bit >>= 1
    literal = b"".join(p for p in (*head, *(table or ()), *tail) if isinstance(p, bytes))
    if any(len(v) >= 8 and v.encode("utf-8", "surrogatepass") in literal
           for v in values if isinstance(v, str)):
        return None, ""  # a variable part inside a nested value: no envelope
    envelope = Envelope(route[0], route[1], declare, _U16.pack(flags) + b"".join(head),
                        None if table is None else _merged(table),
                        sum(len(p) for p in table or () if isinstance(p, bytes)),
                        _merged(tail), dict(props), values)  # type: ignore[arg-type]
    body = b2a_base64(message.body, newline=False).decode()
    return envelope, json.dumps([values[ID], values[TAG], body, values[ARGS], values[KWARGS]])


def parse(text: str) -> list[str]:
    """The values of a call's text (``json.dumps`` of five strings): split at the
    separators (a JSON string holds no bare quote), decoded as JSON only when one of
    them holds an escape."""
    if "\\" not in text and text.startswith('["') and text.endswith('"]'):
        values = text[2:-2].split('", "')
        if len(values) == 5:
            return values
    values = json.loads(text)
    if not (isinstance(values, list) and len(values) == 5
            and all(isinstance(v, str) for v in values)):
        raise ValueError(f"not a plain call's text: {text[:80]!r}")
    return values


def _merged(pieces: list[Piece]) -> tuple[Piece, ...]:
    """``pieces`` with neighbouring literals joined (fewer pieces to fill per call)."""
    out: list[Piece] = []
    for piece in pieces:
        if isinstance(piece, bytes) and out and isinstance(out[-1], bytes):
            out[-1] += piece
        else:
            out.append(piece)
    return tuple(out)


def _table(headers: dict[str, Any], where: dict[str, int]) -> list[Piece]:
    out: list[Piece] = []
    for key, value in headers.items():
        if isinstance(value, str) and value in where:
            raw = key.encode("utf-8", "surrogatepass")
            out += (_U8.pack(len(raw)) + raw + b"S", where[value])
        else:
            out.append(frames.entry(key, value))
    return out


class PlainLane:
    """The broker's side of the plain lane (mixed into the RabbitMQ broker)."""

    url: str
    retry_policy: retry.RetryPolicy
    _pub: Link
    _declared: set[str]
    _specs: dict[str, Any]
    _published: int

    if TYPE_CHECKING:
        def message_priority(self, message: Message, priority: int | None) -> int: ...

        def _ensure_queue(self, chan: amqp.Channel, queue: str) -> None: ...

        def _wait_confirms(self, chan: amqp.Channel, bound: float | None = None) -> None: ...

    def declared(self, queue: str) -> bool:
        """True once the publishing connection declared ``queue``."""
        return queue in self._declared

    def render_envelope(self, message: Message, queue: str,
                        priority: int | None) -> tuple[Envelope | None, str]:
        """``(envelope, text)`` of a ready message for ``queue`` (see :func:`render`)."""
        msg = wire.encode(message, self.message_priority(message, priority))
        route = exchange_route(self._specs, message.properties.get("delivery_info"), queue)
        return render(message, msg, route or ("", queue),
                      tuple(to_declare(self._specs, message, queue, None)))

    def pusher(self, envelope: Envelope | None, queue: str) -> Pusher | None:
        """The one-attempt publish of ``envelope`` (None without one)."""
        return None if envelope is None else Pusher(self, envelope)

    def publish_rendered(self, envelope: Envelope, queue: str, text: str) -> None:
        """Publish ``text`` (from :meth:`render_envelope`) and wait for its confirm."""
        values = parse(text)
        retrying(self.url, "publish", self._pub,
                 lambda chan: self._publish_envelope(chan, envelope, values, None),
                 self.retry_policy)

    def _publish_envelope(self, chan: amqp.Channel, envelope: Envelope,
                          values: list[str], bound: float | None) -> None:
        for name in envelope.declare:  # again on a new connection
            if name not in self._declared:
                self._ensure_queue(chan, name)
        body = a2b_base64(values[BODY])
        conn = chan.connection
        if conn is None or not frames.usable(conn):
            chan._basic_publish(envelope.message(values, body), exchange=envelope.exchange,
                                routing_key=envelope.routing_key)
        else:
            if not chan.is_open:
                raise RecoverableConnectionError("basic_publish: channel closed")
            encoded = [v.encode("utf-8", "surrogatepass") for v in values]
            channel = chan.channel_id
            frames.send(conn, envelope.method(channel)
                        + envelope.content(channel, encoded, body, conn.frame_max))
        self._published += 1
        self._wait_confirms(chan, bound)


class Pusher:
    """One attempt at publishing a plain call of one envelope (``lane.pusher``)."""

    __slots__ = ("broker", "envelope", "where")

    def __init__(self, broker: PlainLane, envelope: Envelope) -> None:
        self.broker, self.envelope = broker, envelope
        self.where = f"RabbitMQ at {redact(broker.url)}"

    def push(self, data: bytes, bound: float | None) -> None:
        """Publish the call's text ``data`` and wait for the confirm, at most ``bound``
        seconds; the broker's one-attempt OperationalError when it failed."""
        values = parse(data.decode())
        broker, link = self.broker, self.broker._pub
        with link.lock:
            try:
                broker._publish_envelope(link.channel(), self.envelope, values, bound)
            except RETRYABLE_ERRORS as exc:
                link.reset()
                raise retry.attempt_error(self.where, "publish", exc) from exc
