"""Raw per-thread connections for the Redis hot paths, and one-round-trip pipelines.

:class:`Direct` gives each thread (of each process) its own connection of a
client's pool and uses redis-py's raw ``send``/``read`` calls: redis-py 8 spends
about 40 µs of Python per command on pool checkout, retries and observability
hooks; a script call on a raw connection takes about half the time of the same
call through the client. Commands are packed by :func:`pack` (RESP, as redis-py
packs them, without its per-argument cost). Calls made during a publish cap their
socket timeouts by the publish deadline (:func:`bound_by_deadline`).

:func:`run_pipeline` sends several commands (scripts among them, :func:`evalsha`)
in one round trip and loads the scripts again after ``NOSCRIPT``.
Every exchange (:meth:`Direct.pipeline`, and :meth:`Direct.send_packed`: a batch packed
once, a plain ``delay()``'s ``LPUSH``, :mod:`.pushing`) reads its replies with hiredis
straight from the socket when it is installed, so a round trip costs less Python than
redis-py's own calls; without it (or while connecting) redis-py's parser reads them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis

from ... import retry

_Reader: Any = None
try:  # hiredis (redis[hiredis]): replies parsed in C (redis-py's own parser otherwise)
    import hiredis

    _Reader = hiredis.Reader
except ImportError:  # pragma: no cover - hiredis is optional
    pass


def bound_by_deadline(conn: Any, left: float) -> tuple[Any, Any]:
    """Make ``conn``'s socket timeouts no longer than the running publish's deadline
    (``left`` seconds); returns what :func:`unbound` puts back.

    A server that accepts connections but never answers would otherwise hold
    the caller for ``socket_timeout`` (30 s) per attempt. Outside a deadline
    (consumers, result reads) the configured timeouts apply unchanged.
    """
    if left <= 0:
        raise redis.TimeoutError("deadline reached")
    read, connect = conn.socket_timeout, conn.socket_connect_timeout
    conn.socket_timeout = left if read is None else min(read, left)
    conn.socket_connect_timeout = left if connect is None else min(connect, left)
    sock = getattr(conn, "_sock", None)
    if sock is not None:
        sock.settimeout(conn.socket_timeout)
    return read, connect


def _capped(timeout: float | None, bound: float | None) -> float | None:
    """The read timeout of a call bounded by ``bound`` seconds (None: no bound)."""
    if bound is None:
        return timeout
    return bound if timeout is None else min(timeout, bound)


def unbound(conn: Any, saved: tuple[Any, Any]) -> None:
    """Put back the timeouts :func:`bound_by_deadline` changed."""
    conn.socket_timeout, conn.socket_connect_timeout = saved
    sock = getattr(conn, "_sock", None)
    if sock is not None:
        sock.settimeout(saved[0])


def pack(commands: Sequence[Sequence[Any]]) -> bytes:
    """``commands`` in Redis's wire format (RESP), as redis-py packs them (text as UTF-8,
    integers and floats as their ``repr``), without its per-argument overhead."""
    parts: list[bytes] = []
    add = parts.append
    for command in commands:
        add(b"*%d\r\n" % len(command))
        for arg in command:
            kind = type(arg)  # exact types first: the common case costs one test
            if kind is bytes:
                data = arg
            elif kind is str:
                data = arg.encode()
            elif kind is int or kind is float:
                data = repr(arg).encode()
            else:
                data = _packed_arg(arg)
            add(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def _packed_arg(arg: Any) -> bytes:
    """One argument of a subclass of bytes, str, int or float (bool refused, as redis-py
    refuses it)."""
    if isinstance(arg, bytes):
        return bytes(arg)
    if isinstance(arg, str):
        return str(arg).encode("utf-8")
    if isinstance(arg, (int, float)) and not isinstance(arg, bool):
        return repr(arg).encode("ascii")
    raise redis.DataError(f"Invalid input of type: {type(arg).__name__!r}. "
                          "Convert to a bytes, string, int or float first.")


def _checked(conn: Any, replies: list[Any], raise_errors: bool) -> list[Any]:
    """``replies``, or the first error reply among them raised (``raise_errors``); a
    ``READONLY`` reply drops the connection either way: a master turned replica
    (Sentinel), the next call finds the new one."""
    for reply in replies:
        if isinstance(reply, redis.ResponseError):
            if isinstance(reply, redis.exceptions.ReadOnlyError):
                conn.disconnect()
            if raise_errors:
                raise reply
            break
    return replies


class Direct:
    """Per-thread raw connections of ``client``'s pool, for commands on hot paths.

    Each thread (of each process: a forked child never touches its parent's
    socket) gets its own connection, built like the pool's but not counted by
    it, and keeps it. A connection error or an interrupted read drops the socket
    (the next call reconnects); error replies are raised after every reply of
    the batch was read, so the stream always stays in sync.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._local = threading.local()

    def _connection(self) -> Any:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.conn = self._pool.connection_class(**self._pool.connection_kwargs)
            local.pid = os.getpid()
            local.reader = None  # (socket, hiredis reader, bound) of send_packed
        return local.conn

    def send_packed(self, packed: bytes, count: int, bound: float | None, *,
                    raise_errors: bool = True) -> list[Any]:
        """Write ``packed`` (``count`` commands, from :func:`pack`) and return their replies,
        with the socket's read timeout at most ``bound`` seconds: one attempt of a publish
        (its deadline is ``bound`` away), outside :func:`celeriac.retry.call`.

        With hiredis the replies are read straight from the socket into a reader of
        this connection's own (redis-py's per-call checks cost more than the round
        trip's Python otherwise); error replies are raised after all were read (with
        ``raise_errors=False`` left in place). The socket keeps the bounded timeout
        until a call with another bound (:meth:`pipeline` outside a publish: none)
        puts the configured one back.
        """
        return self._exchange(packed, count, bound, raise_errors)

    def _exchange(self, packed: bytes, count: int, bound: float | None,
                  raise_errors: bool) -> list[Any]:
        if bound is not None and bound <= 0:
            raise redis.TimeoutError("deadline reached")
        local = self._local
        conn = local.conn if getattr(local, "pid", None) == os.getpid() else self._connection()
        sock = conn._sock
        if sock is None or (conn.health_check_interval
                            and time.monotonic() > conn.next_health_check):
            return self._exchange_slowly(conn, packed, count, bound, raise_errors)
        reader = local.reader
        try:
            if reader is None or reader[0] is not sock:
                reader = self._fresh_reader(conn, sock, bound)
                if reader is None:
                    return self._exchange_slowly(conn, packed, count, bound, raise_errors)
            elif reader[2] != bound:
                sock.settimeout(_capped(conn.socket_timeout, bound))
                local.reader = reader = (sock, reader[1], bound)
            sock.sendall(packed)
            gets, replies = reader[1].gets, []
            while True:
                reply = gets()
                if reply is False:
                    data = sock.recv(65536)
                    if not data:
                        raise redis.ConnectionError("Connection closed by server.")
                    reader[1].feed(data)
                    continue
                replies.append(reply)
                if len(replies) == count:
                    break
        except BaseException as exc:
            conn.disconnect()
            local.reader = None
            if isinstance(exc, OSError):  # socket errors as redis-py names them
                raise (redis.TimeoutError if isinstance(exc, TimeoutError)
                       else redis.ConnectionError)(f"Error while writing or reading: {exc}"
                                                   ) from exc
            raise
        if conn.health_check_interval:
            conn.next_health_check = time.monotonic() + conn.health_check_interval
        return _checked(conn, replies, raise_errors)

    def _fresh_reader(self, conn: Any, sock: Any,
                      bound: float | None) -> tuple[Any, Any, float | None] | None:
        """A hiredis reader for ``sock`` (None without hiredis, or with bytes pending in
        redis-py's own parser), the socket's timeout bounded."""
        if _Reader is None or getattr(conn._parser, "_reader", None) is None:
            return None
        if conn._parser._reader.has_data():
            return None
        sock.settimeout(_capped(conn.socket_timeout, bound))
        found = self._local.reader = (sock, _Reader(replyError=conn._parser.parse_error),
                                      bound)
        return found

    def _exchange_slowly(self, conn: Any, packed: bytes, count: int, bound: float | None,
                         raise_errors: bool) -> list[Any]:
        """:meth:`_exchange` through redis-py's connection (connecting first, a health
        check due, or no hiredis)."""
        local = self._local
        if local.reader is not None:  # a bound of the last exchange may be on the socket
            local.reader = None
            if conn._sock is not None:
                conn._sock.settimeout(conn.socket_timeout)
        saved = bound_by_deadline(conn, bound) if bound is not None else None
        replies: list[Any] = []
        try:
            if not conn.is_connected:
                conn.connect()  # sentinel connections find the master here
            conn.send_packed_command([packed])
            for _ in range(count):
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as exc:  # a whole reply was read: in sync
                    replies.append(exc)
        except BaseException:
            conn.disconnect()
            raise
        finally:
            if saved is not None:
                unbound(conn, saved)
        return _checked(conn, replies, raise_errors)

    def execute(self, *args: Any) -> Any:
        """Send one command and return its raw reply."""
        return self.pipeline([args])[0]

    def pipeline(self, commands: Sequence[Sequence[Any]], *,
                 raise_errors: bool = True) -> list[Any]:
        """Send ``commands`` in one write; return their raw replies in order (an error
        reply raised once all were read, or with ``raise_errors=False`` left in place).
        Inside a publish the call ends by its deadline (:func:`celeriac.retry.time_left`)."""
        return self._exchange(pack(commands), len(commands), retry.time_left(), raise_errors)

    def close(self) -> None:
        """Drop this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.disconnect()
        self._local.pid = None


def direct_for(client: redis.Redis) -> Direct:
    """The :class:`Direct` connections of ``client`` (one set per client)."""
    found: Direct | None = getattr(client, "_celeriac_direct", None)
    if found is None:
        found = Direct(client)
        client._celeriac_direct = found  # type: ignore[attr-defined]
    return found


def run_script(direct: Direct, script: Any, keys: list[str], args: list[Any]) -> Any:
    """``EVALSHA`` on a raw connection, loading the script again after ``NOSCRIPT`` (a
    restarted or flushed server)."""
    return run_pipeline(direct, [evalsha(script, keys, args)], [script])[0]


def evalsha(script: Any, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
    """The ``EVALSHA`` command of a registered script, for :func:`run_pipeline`."""
    return ("EVALSHA", script.sha, len(keys), *keys, *args)


def run_pipeline(direct: Direct, commands: Sequence[Sequence[Any]],
                 scripts: Sequence[Any], *, raise_errors: bool = True) -> list[Any]:
    """``commands`` in one round trip; after ``NOSCRIPT`` (a restarted or flushed server)
    ``scripts`` are loaded and the commands that met ``NOSCRIPT`` are sent again. Only
    those: another process may have loaded some of the scripts meanwhile, so a command
    of the batch may have run (a ``RECEIVE`` that leased messages must not run twice).
    ``raise_errors=False`` leaves other error replies in place (see :meth:`Direct.pipeline`)."""
    replies = direct.pipeline(commands, raise_errors=False)
    missing = [i for i, reply in enumerate(replies)
               if isinstance(reply, redis.exceptions.NoScriptError)]
    if missing:
        direct.pipeline([("SCRIPT", "LOAD", script.script) for script in scripts])
        again = direct.pipeline([commands[i] for i in missing], raise_errors=False)
        for i, reply in zip(missing, again, strict=True):
            replies[i] = reply
    failed = next((r for r in replies if isinstance(r, redis.ResponseError)), None)
    if raise_errors and failed is not None:
        raise failed
    return replies
