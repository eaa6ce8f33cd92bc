"""AMQP 0-9-1 content properties and field tables parsed without py-amqp's generic codec.

:func:`decode_properties` reads basic content properties and their field tables
as py-amqp's ``decode_properties_basic`` does (tested against it); the entries of
a header table that repeat from one task message to the next (key, type and an
immutable value: ``task``, ``retries``, ``origin``, the ``None`` fields) are
decoded once and remembered. Rendering them is :mod:`.frames`; reading the socket
is :mod:`.reading`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from struct import Struct
from typing import Any

from amqp.exceptions import FrameSyntaxError

_U16, _I16, _I8 = Struct(">H"), Struct(">h"), Struct(">b")
_U32, _I32, _I64, _U64 = Struct(">I"), Struct(">i"), Struct(">q"), Struct(">Q")
_F32, _F64 = Struct(">f"), Struct(">d")


def _text(raw: bytes) -> Any:
    try:
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return raw


def _item(buf: bytes, off: int) -> tuple[Any, int]:
    kind = buf[off]
    off += 1
    if kind == 83:  # S
        size = _U32.unpack_from(buf, off)[0]
        off += 4
        raw = buf[off:off + size]
        try:
            return raw.decode("utf-8", "surrogatepass"), off + size
        except UnicodeDecodeError:
            return raw, off + size
    if kind == 73:  # I
        return _I32.unpack_from(buf, off)[0], off + 4
    if kind == 70:  # F
        size = _U32.unpack_from(buf, off)[0]
        off += 4
        return decode_table(buf, off, off + size), off + size
    if kind == 65:  # A
        size = _U32.unpack_from(buf, off)[0]
        off += 4
        end, out = off + size, []
        while off < end:
            value, off = _item(buf, off)
            out.append(value)
        return out, off
    if kind == 116:  # t
        return bool(buf[off]), off + 1
    if kind == 86:  # V
        return None, off
    if kind == 100:  # d
        return _F64.unpack_from(buf, off)[0], off + 8
    if kind in (76, 108):  # L, l
        return _I64.unpack_from(buf, off)[0], off + 8
    if kind in (115, 85):  # s, U
        return _I16.unpack_from(buf, off)[0], off + 2
    if kind == 120:  # x
        size = _U32.unpack_from(buf, off)[0]
        off += 4
        return buf[off:off + size], off + size
    if kind == 98:  # b
        return _I8.unpack_from(buf, off)[0], off + 1
    if kind == 66:  # B
        return buf[off], off + 1
    if kind == 117:  # u
        return _U16.unpack_from(buf, off)[0], off + 2
    if kind == 105:  # i
        return _U32.unpack_from(buf, off)[0], off + 4
    if kind == 102:  # f
        return _F32.unpack_from(buf, off)[0], off + 4
    if kind == 68:  # D
        places, value = buf[off], _I32.unpack_from(buf, off + 1)[0]
        return Decimal(value) / Decimal(10 ** places), off + 5
    if kind == 84:  # T
        stamp = _U64.unpack_from(buf, off)[0]
        return datetime.fromtimestamp(stamp, tz=timezone.utc).replace(tzinfo=None), off + 8
    raise FrameSyntaxError(f"Unknown value in table: {chr(kind)!r}")


#: bytes after the type octet of the fixed-size field types whose values are immutable
_FIXED = {86: 0, 116: 1, 98: 1, 66: 1, 115: 2, 85: 2, 117: 2, 73: 4, 105: 4, 102: 4,
          68: 5, 100: 8, 76: 8, 108: 8, 84: 8}
#: decoded ``(key, value)`` of the raw entries (key, type and an immutable value) that
#: repeat from one task message to the next (``task``, ``retries``, ``origin``...)
_DECODED: dict[bytes, tuple[Any, Any]] = {}
_DECODED_MAX = 4096
#: longest string value remembered (ids are longer)
_SHORT = 32


def decode_table(buf: bytes, off: int, end: int) -> dict[Any, Any]:
    """The field table in ``buf[off:end]``."""
    out: dict[Any, Any] = {}
    cache = _DECODED
    while off < end:
        at = off + 1 + buf[off]  # the type octet
        kind = buf[at]
        if kind == 83:  # S
            size = _U32.unpack_from(buf, at + 1)[0]
            stop = at + 5 + size if size < _SHORT else 0
        else:
            fixed = _FIXED.get(kind)
            stop = 0 if fixed is None else at + 1 + fixed
        if stop:
            raw = buf[off:stop]
            known = cache.get(raw)
            if known is None:
                known = (_text(buf[off + 1:at]), _item(buf, at)[0])
                if len(cache) < _DECODED_MAX:
                    cache[raw] = known
            out[known[0]] = known[1]
            off = stop
        else:
            key = _text(buf[off + 1:at])
            out[key], off = _item(buf, at)
    return out


_SHORT_PROPS = {0x8000: "content_type", 0x4000: "content_encoding"}
_LATER_SHORT = ((0x0400, "correlation_id"), (0x0200, "reply_to"), (0x0100, "expiration"),
                (0x0080, "message_id"))
_LAST_SHORT = ((0x0020, "type"), (0x0010, "user_id"), (0x0008, "app_id"),
               (0x0004, "cluster_id"))


def short_string(buf: bytes, off: int) -> tuple[str, int]:
    """The short string at ``off`` and the offset after it."""
    size = buf[off]
    return buf[off + 1:off + 1 + size].decode("utf-8", "surrogatepass"), off + 1 + size


def decode_properties(buf: bytes, off: int) -> tuple[dict[str, Any], int]:
    """Basic content properties at ``off`` (as py-amqp's ``decode_properties_basic``)."""
    props: dict[str, Any] = {}
    flags = _U16.unpack_from(buf, off)[0]
    off += 2
    if flags & 0x8000:
        props["content_type"], off = short_string(buf, off)
    if flags & 0x4000:
        props["content_encoding"], off = short_string(buf, off)
    if flags & 0x2000:
        size = _U32.unpack_from(buf, off)[0]
        off += 4
        props["application_headers"] = decode_table(buf, off, off + size)
        off += size
    if flags & 0x1000:
        props["delivery_mode"] = buf[off]
        off += 1
    if flags & 0x0800:
        props["priority"] = buf[off]
        off += 1
    for bit, name in _LATER_SHORT:
        if flags & bit:
            props[name], off = short_string(buf, off)
    if flags & 0x0040:
        props["timestamp"] = _U64.unpack_from(buf, off)[0]
        off += 8
    for bit, name in _LAST_SHORT:
        if flags & bit:
            props[name], off = short_string(buf, off)
    return props, off
