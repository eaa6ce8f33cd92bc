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
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import redis

from ... import retry


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
            if isinstance(arg, bytes):
                data = arg
            elif isinstance(arg, str):
                data = arg.encode("utf-8")
            elif isinstance(arg, (int, float)) and not isinstance(arg, bool):
                data = repr(arg).encode("ascii")
            else:
                raise redis.DataError(f"Invalid input of type: {type(arg).__name__!r}. "
                                      "Convert to a bytes, string, int or float first.")
            add(b"$%d\r\n" % len(data))
            add(data)
            add(b"\r\n")
    return b"".join(parts)


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
        return local.conn

    def execute(self, *args: Any) -> Any:
        """Send one command and return its raw reply."""
        return self.pipeline([args])[0]

    def pipeline(self, commands: Sequence[Sequence[Any]], *,
                 raise_errors: bool = True) -> list[Any]:
        """Send ``commands`` in one write; return their raw replies in order (an error
        reply raised once all were read, or with ``raise_errors=False`` left in place)."""
        conn = self._connection()
        replies: list[Any] = []
        error: redis.ResponseError | None = None
        left = retry.time_left()
        saved = None
        try:
            if left is not None:  # inside a publish: end by its deadline
                saved = bound_by_deadline(conn, left)
            if not conn.is_connected:
                conn.connect()  # sentinel connections find the master here
            conn.send_packed_command([pack(commands)])
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as exc:  # a whole reply was read: in sync
                    error = error or exc
                    replies.append(exc)
        except BaseException:
            conn.disconnect()
            raise
        finally:
            if saved is not None:
                unbound(conn, saved)
        if error is not None:
            if isinstance(error, redis.exceptions.ReadOnlyError):
                conn.disconnect()  # a master turned replica (Sentinel): find the new one
            if raise_errors:
                raise error
        return replies

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
