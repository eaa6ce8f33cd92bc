"""Waiting for publisher confirms: the publishing connection's socket read here.

After a publish the only frames a publishing connection expects are the
confirm (``basic.ack`` or ``basic.nack``), perhaps a ``basic.return`` of a
``mandatory`` message RabbitMQ could not route (it comes before the confirm)
and heartbeats. On a plain TCP connection :func:`wait` reads them itself: it
polls the socket (no timeout switched on and off around every read), appends
what arrived to py-amqp's read buffer (``transport._read_buffer``, which
py-amqp's own reads share) and parses it:

* ``basic.ack`` / ``basic.nack`` of the channel: to the confirm callbacks;
* ``basic.return`` of the channel with its content: a :class:`Returned`;
* heartbeats: counted as traffic (py-amqp's heartbeat check sees them);
* anything else (``channel.close`` of a publish to a missing exchange,
  ``connection.close``, ``connection.blocked``...): to py-amqp's own frame
  handler, in arrival order, so it answers and raises as it always does.

A connection that ends while waiting raises ``OSError`` (the caller's retry
policy reconnects), and no confirm by ``deadline`` raises ``TimeoutError``.
TLS connections are read by py-amqp (:func:`.reading.wait`).
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from dataclasses import dataclass
from struct import Struct

import amqp
from amqp.exceptions import UnexpectedFrame

from . import reading
from .frames import short_string, usable

CHUNK, FRAME_END = reading.CHUNK, reading.FRAME_END
_HEAD, _SIG, _CONFIRM = reading._HEAD, reading._SIG, reading._CONFIRM
_U16 = Struct(">H")
_READABLE = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


@dataclass(frozen=True)
class Returned:
    """A message RabbitMQ gave back (``basic.return``): published ``mandatory`` and
    routed to no queue."""

    reply_code: int
    reply_text: str
    exchange: str
    routing_key: str


def wait(conn: amqp.Connection, confirms: reading.Confirms, done: Callable[[], bool],
         deadline: float, returned: list[Returned] | None = None) -> None:
    """Read ``conn`` until ``done()`` (the confirms of channel ``confirms[0]`` go to its
    callbacks), or raise ``TimeoutError`` at monotonic ``deadline``. ``basic.return``
    frames of the channel are appended to ``returned`` (None: py-amqp handles them)."""
    if not usable(conn):
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no publisher confirm from RabbitMQ in time")
            reading.wait(conn, min(left, 1.0), confirms)
        return
    transport = conn.transport
    poller: select.poll | None = None
    while True:
        if transport._read_buffer:
            _dispatch(conn, confirms, returned)
        if done():
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no publisher confirm from RabbitMQ in time")
        if poller is None:
            poller = select.poll()
            poller.register(transport.sock.fileno(), _READABLE)
        if not poller.poll(min(left, 1.0) * 1000.0 + 1.0):
            continue
        try:
            data = transport.sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            transport.connected = False
            raise
        if not data:
            transport.connected = False
            raise OSError("Server unexpectedly closed connection")
        transport._read_buffer += data


def _dispatch(conn: amqp.Connection, confirms: reading.Confirms,
              returned: list[Returned] | None) -> None:
    """Handle the complete frames in the read buffer (see the module docstring)."""
    transport = conn.transport
    buf = transport._read_buffer
    mine, on_ack, on_nack = confirms
    off = 0
    try:
        while len(buf) - off >= 8:
            kind, channel, size = _HEAD.unpack_from(buf, off)
            end = off + 7 + size
            if end >= len(buf):
                break
            if buf[end] != FRAME_END:
                raise UnexpectedFrame(f"Received frame_end {buf[end]:#04x} while expecting 0xce")
            if kind == 8:  # heartbeat
                off = end + 1
                conn.bytes_recv += 1
                continue
            if kind == 1 and channel == mine and size >= 4:
                cls, method = _SIG.unpack_from(buf, off + 7)
                if cls == 60 and method in (80, 120):
                    tag, bits = _CONFIRM.unpack_from(buf, off + 11)
                    off = end + 1
                    conn.bytes_recv += 1
                    (on_ack if method == 80 else on_nack)(tag, bool(bits & 1))
                    continue
                if cls == 60 and method == 50 and returned is not None:
                    stop = reading.content_end(buf, end + 1, channel)
                    if stop is None:
                        break  # its content has not all arrived yet
                    if stop > 0:
                        returned.append(_returned(buf, off + 11))
                        off = stop
                        conn.bytes_recv += 1
                        continue
            frame = (kind, channel, buf[off + 7:end])
            transport._read_buffer = buf = buf[end + 1:]
            off = 0
            conn.on_inbound_frame(frame)  # py-amqp's own handling, in order
            buf = transport._read_buffer
    finally:
        if off:
            transport._read_buffer = buf[off:]


def _returned(buf: bytes, pos: int) -> Returned:
    code = _U16.unpack_from(buf, pos)[0]
    text, pos = short_string(buf, pos + 2)
    exchange, pos = short_string(buf, pos)
    routing_key, _ = short_string(buf, pos)
    return Returned(code, text, exchange, routing_key)
