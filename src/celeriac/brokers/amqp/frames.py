"""AMQP 0-9-1 frames rendered and parsed without py-amqp's generic codec.

py-amqp encodes and decodes properties with a generic interpreter and writes
every ack in a socket write of its own. On the hot paths celeriac renders and
parses them here, byte for byte as py-amqp does (tested against it):

* :func:`encode_properties`: basic content properties and their field tables
  (parsing them is :mod:`.decoding`, re-exported here: :func:`decode_properties`);
* :func:`publish`: a ``basic.publish`` as its method, header and body frames in
  one socket write (plain TCP; TLS goes through py-amqp);
* :func:`ack_frames`: a batch of acks (one ``multiple`` ack where no unsettled
  delivery lies below) and rejects, for one write.

Reading (chunked reads, deliveries and confirms dispatched here) is
:mod:`.reading`.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from struct import Struct, pack
from typing import Any

import amqp
from amqp.exceptions import FrameSyntaxError, RecoverableConnectionError
from amqp.transport import TCPTransport

from .decoding import decode_properties as decode_properties  # re-exported
from .decoding import decode_table as decode_table
from .decoding import short_string as short_string

FRAME_END = 0xCE
_END = b"\xce"
_HEAD = Struct(">BHI")
_SIG = Struct(">HH")
_CONTENT_HEAD = Struct(">HHQ")
_U8, _I8, _U16, _I16 = Struct(">B"), Struct(">b"), Struct(">H"), Struct(">h")
_U32, _I32, _I64, _U64 = Struct(">I"), Struct(">i"), Struct(">q"), Struct(">Q")
_F32, _F64 = Struct(">f"), Struct(">d")
_ACK_FRAME = Struct(">BHIHHQBB")



def usable(conn: amqp.Connection) -> bool:
    """True when the connection's transport is plain TCP (the fast paths apply)."""
    return type(conn.transport) is TCPTransport


# -- encoding ---------------------------------------------------------------------------
def _put(value: Any, out: list[bytes]) -> None:
    kind = type(value)
    if kind is str:  # the common exact types first; subclasses take the checks below
        raw = value.encode("utf-8", "surrogatepass")
        out.append(b"S" + _U32.pack(len(raw)))
        out.append(raw)
    elif value is None:
        out.append(b"V")
    elif kind is list and not value:
        out.append(b"A\x00\x00\x00\x00")
    elif kind is dict and not value:
        out.append(b"F\x00\x00\x00\x00")
    elif isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
        out.append(b"S" + _U32.pack(len(raw)))
        out.append(raw)
    elif isinstance(value, bytes):
        out.append(b"S" + _U32.pack(len(value)))
        out.append(value)
    elif isinstance(value, bool):
        out.append(b"t\x01" if value else b"t\x00")
    elif isinstance(value, float):
        out.append(b"d" + _F64.pack(value))
    elif isinstance(value, int):
        if value > 2147483647 or value < -2147483647:
            out.append(b"L" + _I64.pack(value))
        else:
            out.append(b"I" + _I32.pack(value))
    elif isinstance(value, Decimal):
        sign, digits, exponent = value.as_tuple()
        number = 0
        for d in digits:
            number = number * 10 + d
        out.append(pack(">cBi", b"D", -int(exponent), -number if sign else number))
    elif isinstance(value, datetime):
        out.append(b"T" + _U64.pack(int(calendar.timegm(value.utctimetuple()))))
    elif isinstance(value, dict):
        out.append(b"F")
        out.append(encode_table(value))
    elif isinstance(value, (list, tuple)):
        parts: list[bytes] = []
        for v in value:
            _put(v, parts)
        data = b"".join(parts)
        out.append(b"A" + _U32.pack(len(data)))
        out.append(data)
    elif value is None:
        out.append(b"V")
    else:
        raise FrameSyntaxError(f"Table type {type(value)!r} not handled by amqp. "
                               f"[value: {value!r}]")


#: encoded ``key: value`` entries of small scalar values, which repeat from one task
#: message to the next (``task``, ``retries``, ``origin``...); ids are longer
_ENTRIES: dict[tuple[Any, type, Any], bytes] = {}
_ENTRIES_MAX = 4096
_SCALARS = (type(None), bool, int)
#: a table key's encoded length, name and ``S`` (a long string value follows)
_STR_KEYS: dict[str, bytes] = {}


def entry(key: Any, value: Any) -> bytes:
    """One ``key: value`` entry of a field table."""
    raw = key.encode("utf-8", "surrogatepass") if isinstance(key, str) else key
    out = [_U8.pack(len(raw)), raw]
    _put(value, out)
    return b"".join(out)


def encode_table(table: Mapping[Any, Any]) -> bytes:
    """A field table with its length prefix (as py-amqp writes it)."""
    out: list[bytes] = []
    cache = _ENTRIES
    for key, value in table.items():
        kind = type(value)
        if kind in _SCALARS or (kind is str and len(value) < 32) or (
                kind is list and len(value) == 2 and value[0] is None and value[1] is None):
            value = tuple(value) if kind is list else value  # timelimit: [None, None]
            known = cache.get((key, kind, value))
            if known is None:
                known = entry(key, value)
                if len(cache) < _ENTRIES_MAX:
                    cache[(key, kind, value)] = known
            out.append(known)
        elif kind is str and key.__class__ is str:  # a long text (an id): the key's part once
            head = _STR_KEYS.get(key)
            if head is None:
                raw_key = key.encode("utf-8", "surrogatepass")
                head = _U8.pack(len(raw_key)) + raw_key + b"S"
                if len(_STR_KEYS) < _ENTRIES_MAX:
                    _STR_KEYS[key] = head
            raw = value.encode("utf-8", "surrogatepass")
            out.append(head + _U32.pack(len(raw)) + raw)
        else:
            out.append(entry(key, value))
    data = b"".join(out)
    return _U32.pack(len(data)) + data


def short_bytes(value: Any) -> bytes:
    """A short string (length octet and bytes)."""
    raw = (value or "").encode("utf-8", "surrogatepass") if isinstance(value or "", str) \
        else value
    return _U8.pack(len(raw)) + raw


PROPERTY_ORDER = (("content_type", "s"), ("content_encoding", "s"), ("application_headers", "F"),
          ("delivery_mode", "o"), ("priority", "o"), ("correlation_id", "s"),
          ("reply_to", "s"), ("expiration", "s"), ("message_id", "s"), ("timestamp", "L"),
          ("type", "s"), ("user_id", "s"), ("app_id", "s"), ("cluster_id", "s"))


_ORDER_BITS = tuple((name, kind, 0x8000 >> i) for i, (name, kind) in enumerate(PROPERTY_ORDER))


def encode_properties(props: Mapping[str, Any]) -> bytes:
    """Property flags and list of a basic content header (as py-amqp writes them)."""
    flags, out = 0, []
    get = props.get
    for name, kind, bit in _ORDER_BITS:
        value = get(name)
        if value is None:
            continue
        flags |= bit
        if kind == "s":
            if value.__class__ is str:
                raw = value.encode("utf-8", "surrogatepass")
                out.append(_U8.pack(len(raw)) + raw)
            else:
                out.append(short_bytes(value))
        elif kind == "F":
            out.append(encode_table(value or {}))
        elif kind == "o":
            out.append(_U8.pack(value))
        else:
            out.append(_U64.pack(value))
    return _U16.pack(flags) + b"".join(out)


def method_frame(channel: int, exchange: str, routing_key: str, *,
                 mandatory: bool = False) -> bytes:
    """The method frame of a ``basic.publish`` (immediate off)."""
    method = b"".join((b"\x00\x3c\x00\x28\x00\x00", short_bytes(exchange),
                       short_bytes(routing_key), b"\x01" if mandatory else b"\x00"))
    return b"".join((_HEAD.pack(1, channel, len(method)), method, _END))


def content_frames(channel: int, properties: bytes, body: bytes, frame_max: int) -> bytes:
    """The content header (``properties`` rendered by :func:`encode_properties`) and body
    frames of a message."""
    header = _CONTENT_HEAD.pack(60, 0, len(body)) + properties
    out = [_HEAD.pack(2, channel, len(header)), header, _END]
    chunk = frame_max - 8
    for start in range(0, len(body), chunk):
        piece = body[start:start + chunk]
        out += [_HEAD.pack(3, channel, len(piece)), piece, _END]
    return b"".join(out)


def publish_frames(channel: int, exchange: str, routing_key: str, properties: bytes,
                   body: bytes, frame_max: int, *, mandatory: bool = False) -> bytes:
    """A ``basic.publish`` (immediate off) as its frames, for one write."""
    return method_frame(channel, exchange, routing_key, mandatory=mandatory) + \
        content_frames(channel, properties, body, frame_max)


def ack_frames(channel: int, acks: Iterable[int], rejects: Iterable[int] = (),
               unsettled_below: int | None = None) -> bytes:
    """Frames acknowledging ``acks`` and rejecting (no requeue) ``rejects``, for one write.

    Acks below ``unsettled_below`` (the lowest delivery tag of the channel that stays
    unsettled; None: none stays) are sent as one ``multiple`` ack of the highest."""
    out = []
    tags = sorted(acks)
    below = [t for t in tags if unsettled_below is None or t < unsettled_below]
    if len(below) > 1:
        out.append(_ACK_FRAME.pack(1, channel, 13, 60, 80, below[-1], 1, FRAME_END))
        tags = tags[len(below):]
    for tag in tags:
        out.append(_ACK_FRAME.pack(1, channel, 13, 60, 80, tag, 0, FRAME_END))
    for tag in sorted(rejects):
        out.append(_ACK_FRAME.pack(1, channel, 13, 60, 90, tag, 0, FRAME_END))
    return b"".join(out)


def settle(chan: amqp.Channel, acks: list[int], rejects: list[int],
           unsettled_below: int | None) -> None:
    """Acknowledge ``acks`` and reject (no requeue) ``rejects`` on ``chan``: in one write
    (:func:`ack_frames`) on plain TCP, else one py-amqp call each. Nothing is sent on a
    channel the server closed: it requeued what the channel held."""
    if not chan.is_open:
        return
    conn = chan.connection
    if conn is not None and usable(conn):
        send(conn, ack_frames(chan.channel_id, acks, rejects, unsettled_below))
        return
    for tag in acks:
        chan.basic_ack(tag)
    for tag in rejects:
        chan.basic_reject(tag, requeue=False)


def send(conn: amqp.Connection, data: bytes) -> None:
    """Write rendered frames on ``conn`` (its users hold the link's lock)."""
    conn.transport.write(data)
    conn.bytes_sent += 1


def publish(chan: amqp.Channel, msg: amqp.Message, exchange: str, routing_key: str) -> None:
    """``basic.publish`` of ``msg``: its frames in one socket write on plain TCP, else
    through py-amqp."""
    conn = chan.connection
    if conn is None or not usable(conn):
        chan._basic_publish(msg, exchange=exchange, routing_key=routing_key)
        return
    if not chan.is_open:
        raise RecoverableConnectionError("basic_publish: channel closed")
    send(conn, publish_frames(chan.channel_id, exchange, routing_key,
                              encode_properties(msg.properties), msg.body, conn.frame_max))


