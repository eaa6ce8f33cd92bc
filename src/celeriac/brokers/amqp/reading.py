"""Reading an AMQP connection: chunked socket reads, deliveries and confirms decoded here.

py-amqp reads a frame with three ``recv`` calls (header, payload, end octet)
and decodes every delivery through its generic codec. On a plain TCP
connection celeriac reads instead, in the same byte stream:

* :func:`install` makes py-amqp's own reads chunked; its reads and
  :func:`pump` share the transport's ``_read_buffer``, so whichever reads next
  finds the bytes;
* :func:`pump` hands complete ``basic.deliver`` sequences (method, header and
  body frames of one channel) straight to the channel's consumer callback, as a
  :class:`Delivered` (what a callback reads of an ``amqp.Message``), and
  ``basic.ack``/``basic.nack`` confirms of one channel to callbacks; every other
  frame goes to py-amqp's handler (``Connection.on_inbound_frame``) in arrival
  order, so channel and connection events (``channel.close``,
  ``connection.blocked``, ``basic.cancel``) keep their meaning. A delivery
  that is not complete in the buffer waits for the next read.

TLS connections are read by py-amqp (:func:`drain`, :func:`wait` fall back).
"""

from __future__ import annotations

from collections.abc import Callable
from socket import MSG_DONTWAIT
from struct import Struct
from typing import Any

import amqp
from amqp.exceptions import UnexpectedFrame

from .decoding import decode_properties, short_string
from .frames import usable

#: bytes asked of the socket per read
CHUNK = 65536
FRAME_END = 0xCE
_HEAD = Struct(">BHI")
_SIG = Struct(">HH")
_U32, _U64 = Struct(">I"), Struct(">Q")
_CONFIRM = Struct(">QB")

#: a confirm callback: ``(delivery_tag, multiple)``
OnConfirm = Callable[[int, bool], None]
#: the channel whose confirms are handled, and the callbacks for acks and nacks
Confirms = tuple[int, OnConfirm, OnConfirm]


def install(conn: amqp.Connection) -> None:
    """Make py-amqp read the socket in chunks (the remainder stays in its buffer)."""
    if usable(conn):
        recv = conn.transport.sock.recv
        conn.transport._quick_recv = lambda n: recv(n if n > CHUNK else CHUNK)


def drain(conn: amqp.Connection, timeout: float, once: bool = False) -> None:
    """Read what arrived, dispatching deliveries to their consumers: ``once``: wait up
    to ``timeout`` for something; else until nothing comes for ``timeout``."""
    if usable(conn):
        while pump(conn, timeout, deliveries=True) and not once:
            pass
        return
    while True:
        try:
            conn.drain_events(timeout=timeout)
        except TimeoutError:
            return
        if once:
            return


def wait(conn: amqp.Connection, timeout: float, confirms: Confirms) -> None:
    """Wait up to ``timeout`` for frames and dispatch them (confirms of
    ``confirms[0]`` to its callbacks; through py-amqp's channel events on TLS)."""
    if usable(conn):
        pump(conn, timeout, confirms=confirms)
        return
    try:
        conn.drain_events(timeout=timeout)
    except TimeoutError:
        pass


class Delivered:
    """A delivery decoded here: what a consumer callback reads of an ``amqp.Message``."""

    __slots__ = ("body", "channel", "delivery_info", "properties")

    def __init__(self, properties: dict[str, Any], delivery_info: dict[str, Any],
                 body: bytes, channel: Any) -> None:
        self.properties, self.delivery_info = properties, delivery_info
        self.body, self.channel = body, channel

    @property
    def headers(self) -> Any:
        return self.properties.get("application_headers")


def _recv(transport: Any, timeout: float | None) -> bytes:
    """Bytes from the socket, waiting up to ``timeout``; b"" when none came."""
    sock = transport.sock
    try:
        if timeout is not None and timeout <= 0 and sock.gettimeout() is None:
            data = sock.recv(CHUNK, MSG_DONTWAIT)  # one system call, no timeout set and reset
        else:
            with transport.having_timeout(timeout):
                data = sock.recv(CHUNK)
    except (TimeoutError, BlockingIOError, InterruptedError):
        return b""
    except OSError:
        transport.connected = False
        raise
    if not data:
        transport.connected = False
        raise OSError("Server unexpectedly closed connection")
    return data


def pump(conn: amqp.Connection, timeout: float | None, *, deliveries: bool = False,
         confirms: Confirms | None = None) -> int:
    """Dispatch what the buffer holds, else wait up to ``timeout`` for bytes and dispatch
    them. Returns how many frames (or reads) made progress: 0 when nothing came."""
    done = _dispatch(conn, deliveries, confirms)
    if done:
        return done
    data = _recv(conn.transport, timeout)
    if not data:
        return 0
    conn.transport._read_buffer += data
    return _dispatch(conn, deliveries, confirms) or 1


def content_end(buf: bytes, off: int, channel: int) -> int | None:
    """Where the content (header and body frames of ``channel``) that starts at ``off``
    ends; None: not complete in ``buf`` yet; -1: another frame comes first."""
    n = len(buf)
    if n - off < 7:
        return None
    kind, ch, length = _HEAD.unpack_from(buf, off)
    if kind != 2 or ch != channel:
        return -1
    if off + 8 + length > n:
        return None
    body = _U64.unpack_from(buf, off + 11)[0]
    off += 8 + length
    while body > 0:
        if n - off < 7:
            return None
        kind, ch, length = _HEAD.unpack_from(buf, off)
        if kind != 3 or ch != channel:
            return -1
        off += 8 + length
        if off > n:
            return None
        body -= length
    return off


def _deliver(conn: amqp.Connection, buf: bytes, off: int, end: int,
             channel: int) -> tuple[int, Callable[[Any], None] | None, Delivered | None]:
    """The delivery whose method frame ends at ``end``: ``(offset after it, its consumer's
    callback, the delivery)``; offset ``-1``: not handled here (pass it on), 0: not
    complete in ``buf`` yet."""
    stop = content_end(buf, end + 1, channel)
    if stop is None:
        return 0, None, None
    if stop < 0:
        return -1, None, None
    chan = conn.channels.get(channel) if conn.channels else None
    pos = off + 11
    tag_len = buf[pos]
    consumer_tag = buf[pos + 1:pos + 1 + tag_len].decode("utf-8", "surrogatepass")
    callback = chan.callbacks.get(consumer_tag) if chan is not None else None
    if callback is None:
        return -1, None, None
    pos += 1 + tag_len
    delivery_tag = _U64.unpack_from(buf, pos)[0]
    redelivered = bool(buf[pos + 8] & 1)
    exchange, pos = short_string(buf, pos + 9)
    routing_key, pos = short_string(buf, pos)
    head = end + 1
    length = _U32.unpack_from(buf, head + 3)[0]
    props, _ = decode_properties(buf, head + 7 + 12)
    pos, pieces = head + 8 + length, []
    while pos < stop:
        length = _U32.unpack_from(buf, pos + 3)[0]
        pieces.append(buf[pos + 7:pos + 7 + length])
        pos += 8 + length
    body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    conn.bytes_recv += 1
    return stop, callback, Delivered(
        props, {"consumer_tag": consumer_tag, "delivery_tag": delivery_tag,
                "redelivered": redelivered, "exchange": exchange, "routing_key": routing_key},
        body, chan)


def _dispatch(conn: amqp.Connection, deliveries: bool,
              confirms: Confirms | None) -> int:
    transport = conn.transport
    buf = transport._read_buffer
    off, done = 0, 0
    try:
        while len(buf) - off >= 8:
            kind, channel, size = _HEAD.unpack_from(buf, off)
            end = off + 7 + size
            if end >= len(buf):
                break
            if buf[end] != FRAME_END:
                raise UnexpectedFrame(f"Received frame_end {buf[end]:#04x} while expecting 0xce")
            if kind == 1 and size >= 4:
                cls, method = _SIG.unpack_from(buf, off + 7)
                if cls == 60 and method == 60 and deliveries:
                    stop, callback, delivered = _deliver(conn, buf, off, end, channel)
                    if stop == 0:
                        break
                    if callback is not None:
                        off, done = stop, done + 1  # consumed even if the callback raises
                        callback(delivered)
                        continue
                elif cls == 60 and method in (80, 120) and confirms is not None \
                        and channel == confirms[0]:
                    tag, bits = _CONFIRM.unpack_from(buf, off + 11)
                    off, done = end + 1, done + 1
                    conn.bytes_recv += 1
                    (confirms[1] if method == 80 else confirms[2])(tag, bool(bits & 1))
                    continue
            frame = (kind, channel, buf[off + 7:end])
            transport._read_buffer = buf = buf[end + 1:]
            off, done = 0, done + 1
            conn.on_inbound_frame(frame)  # py-amqp's own handling, in order
            buf = transport._read_buffer
    finally:
        if off:
            transport._read_buffer = buf[off:]
    return done
