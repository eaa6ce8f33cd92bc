"""Waiting for task results on one RESP3 connection per process: :class:`ResultWaits`.

A waiter writes ``SUBSCRIBE <key>`` and ``GET <key>`` in one write on the shared
connection. Redis runs a connection's commands in order, so the ``GET`` runs once
the subscription took effect: a result written before is in the ``GET``'s reply,
one written after arrives as a ``message`` push (RESP3 lets a subscribed
connection run ``GET``; pushes are told apart from replies by their type). No
thread waits for a ``subscribe`` confirmation and there is no second round trip.

Nobody reads the socket in a thread of its own: one of the waiting threads (the
"reader") reads and parses (hiredis) the replies and pushes and hands each to the
waiter it belongs to (replies in the order their commands were written); when it
has what it waited for it passes the reading on to another waiting thread. So a
lone ``get()`` reads its own reply, with no thread switch. ``UNSUBSCRIBE`` is
written when a key's last waiter leaves; its confirmation is read by whoever
reads next.

Failures: a connection error drops the connection; the next reader connects
again (backing off, within its own deadline), subscribes every key still waited
for and ``GET``\\ s each again. A reader waiting without a deadline sends a
``PING`` after :data:`PING_INTERVAL` seconds of silence, which finds a dead
connection. Each process has its own (:class:`~.client.PerProcess`): a forked
child never touches its parent's socket.

Used for ``redis://``, ``unix://`` and ``sentinel://`` result stores with hiredis
3 installed and a server speaking RESP3 (Redis 6+); otherwise (TLS, whose sockets
must not be read and written from two threads at once, older servers, Redis
Cluster) the result store uses :class:`~.results.ResultListener`.
"""

from __future__ import annotations

import select
import threading
import time
from collections import deque
from queue import Empty, SimpleQueue
from typing import Any

import redis

from ...retry import RetryPolicy
from .direct import pack

try:
    import hiredis

    _Push: Any = hiredis.PushNotification  # hiredis 3: RESP3 pushes have their own type
except (ImportError, AttributeError):  # pragma: no cover - hiredis missing or older
    _Push = None

#: seconds of silence after which a reader without a deadline PINGs the server
PING_INTERVAL = 30.0
#: how a reader waits between connection attempts (back within ~1 s)
RECONNECT_BACKOFF = RetryPolicy(max_retries=None, interval_start=0.05, interval_step=0.2,
                                interval_max=1.0)
#: what a broken connection raises while it is read or written
_IO_ERRORS: tuple[type[BaseException], ...] = (OSError, redis.ConnectionError,
                                               redis.TimeoutError)
_LEAD = ("lead", None)  # an inbox item: "read the socket now, nobody does"


class Unsupported(Exception):
    """The server refused RESP3 (``HELLO 3``): waits use pub/sub on RESP2 instead."""


class Wait:
    """One waiting ``get()``: its key and its inbox of ``("reply", raw)``,
    ``("message", raw)`` and lead handovers."""

    __slots__ = ("gone", "inbox", "key", "offered")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.inbox: SimpleQueue[tuple[str, Any]] = SimpleQueue()
        self.gone = False  # left: replies still due to it are dropped
        self.offered = False  # handed the reading; passes it on if it leaves first


def usable(client: redis.Redis) -> bool:
    """Whether ``client``'s connections can carry :class:`ResultWaits` (hiredis 3, no TLS)."""
    pool = getattr(client, "connection_pool", None)
    if _Push is None or pool is None:
        return False
    return not issubclass(pool.connection_class, redis.SSLConnection)


class ResultWaits:
    """The process's RESP3 connection for result waits, shared by every thread."""

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._lock = threading.Lock()  # the state below, and every write
        self._conn: Any = None  # redis-py connection (HELLO 3 done), None when dropped
        self._sock: Any = None
        self._reader: Any = None
        self._generation = 0
        self._waits: dict[Wait, None] = {}
        self._channels: dict[bytes, list[Wait]] = {}
        self._replies: deque[Wait | None] = deque()  # whose each coming reply is
        self._reading = False

    # -- joining and leaving -------------------------------------------------------------
    def join(self, key: str) -> Wait:
        """Start waiting on ``key``: subscribe (unless already) and ``GET`` it, one write.
        Raises :class:`Unsupported` when the server refuses RESP3."""
        wait = Wait(key.encode("utf-8"))
        with self._lock:
            self._waits[wait] = None
            waiters = self._channels.setdefault(wait.key, [])
            waiters.append(wait)
            if self._sock is None:
                try:
                    self._connect_locked(quiet=True)  # subscribes and GETs for every wait
                except Unsupported:
                    self._forget_locked(wait)
                    raise
            else:
                commands: list[tuple[Any, ...]] = [("GET", wait.key)]
                if len(waiters) == 1:
                    commands.insert(0, ("SUBSCRIBE", wait.key))
                self._replies.append(wait)
                self._write_locked(pack(commands))
        return wait

    def leave(self, wait: Wait) -> None:
        """Stop waiting; the key is unsubscribed once its last waiter left."""
        with self._lock:
            self._forget_locked(wait)
            if wait.offered:
                wait.offered = False
                self._offer_lead_locked()

    def _forget_locked(self, wait: Wait) -> None:
        wait.gone = True
        self._waits.pop(wait, None)
        waiters = self._channels.get(wait.key, [])
        if wait in waiters:
            waiters.remove(wait)
        if not waiters and wait.key in self._channels:
            del self._channels[wait.key]
            if self._sock is not None:
                self._write_locked(pack([("UNSUBSCRIBE", wait.key)]))

    # -- the next item of one wait -------------------------------------------------------
    def next(self, wait: Wait, deadline: float | None) -> tuple[str, Any] | None:
        """The next reply or message for ``wait``; None once ``deadline`` passed."""
        inbox = wait.inbox
        while True:
            try:
                item = inbox.get_nowait()
            except Empty:
                item = None
            if item is _LEAD:
                with self._lock:
                    wait.offered = False
                continue
            if item is not None:
                return item
            with self._lock:
                lead = not self._reading
                if lead:
                    self._reading = True
            if lead:
                try:
                    self._read_for(wait, deadline)
                finally:
                    with self._lock:
                        self._reading = False
                        self._offer_lead_locked(wait)
                if inbox.empty() and deadline is not None and time.monotonic() >= deadline:
                    return None
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            try:
                item = inbox.get(timeout=remaining)
            except Empty:
                return None
            if item is _LEAD:
                with self._lock:
                    wait.offered = False
                continue
            return item

    def _offer_lead_locked(self, but: Wait | None = None) -> None:
        """Hand the reading to a waiting thread (none reads now), unless one was offered it."""
        if self._reading:
            return
        candidate = None
        for other in self._waits:
            if other.offered:
                return
            if candidate is None and other is not but:
                candidate = other
        if candidate is not None:
            candidate.offered = True
            candidate.inbox.put(_LEAD)

    # -- reading ------------------------------------------------------------------------
    def _read_for(self, wait: Wait, deadline: float | None) -> None:
        """Read and hand out replies until ``wait`` has an item or ``deadline`` passed."""
        pauses = RECONNECT_BACKOFF.intervals()
        while wait.inbox.empty():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            with self._lock:
                if self._sock is None:
                    self._connect_locked(quiet=True)
                sock, reader, generation = self._sock, self._reader, self._generation
            if sock is None:
                pause = next(pauses)
                time.sleep(pause if remaining is None else min(pause, remaining))
                continue
            step = PING_INTERVAL if remaining is None else min(remaining, PING_INTERVAL)
            try:
                poller = select.poll()
                poller.register(sock, select.POLLIN)
                if not poller.poll(step * 1000.0):
                    if step == PING_INTERVAL:
                        with self._lock:
                            if generation == self._generation:
                                self._replies.append(None)
                                self._write_locked(pack([("PING",)]))
                    continue
                data = sock.recv(65536)
                if not data:
                    raise redis.ConnectionError("Connection closed by server.")
                reader.feed(data)
                self._hand_out(reader, generation)
            except _IO_ERRORS:
                with self._lock:
                    if generation == self._generation:
                        self._drop_locked()

    def _hand_out(self, reader: Any, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return  # a dropped connection's leftovers
            gets, replies, channels = reader.gets, self._replies, self._channels
            while True:
                reply = gets()
                if reply is False:
                    return
                if type(reply) is _Push:
                    if len(reply) == 3 and reply[0] == b"message":
                        for wait in channels.get(reply[1], ()):
                            wait.inbox.put(("message", reply[2]))
                    continue
                owner = replies.popleft() if replies else None
                if owner is not None and not owner.gone:
                    owner.inbox.put(("reply", reply))

    # -- the connection -----------------------------------------------------------------
    def _write_locked(self, packed: bytes) -> None:
        try:
            self._sock.sendall(packed)
        except _IO_ERRORS:
            self._drop_locked()

    def _connect_locked(self, *, quiet: bool) -> None:
        """Connect (RESP3), subscribe every waited-for key and ``GET`` each wait's key.
        A connection error leaves it dropped (``quiet``) for the next reader to retry."""
        kwargs = {**self._pool.connection_kwargs, "protocol": 3, "health_check_interval": 0}
        conn = self._pool.connection_class(**kwargs)
        try:
            conn.connect()
        except redis.ResponseError as exc:  # HELLO refused: a server before Redis 6
            conn.disconnect()
            raise Unsupported(str(exc)) from exc
        except _IO_ERRORS:
            conn.disconnect()
            if quiet:
                return
            raise
        self._conn, self._sock, self._generation = conn, conn._sock, self._generation + 1
        self._reader = hiredis.Reader(replyError=conn._parser.parse_error)
        self._replies.clear()
        if self._waits:
            commands: list[tuple[Any, ...]] = [("SUBSCRIBE", *self._channels)]
            commands.extend(("GET", wait.key) for wait in self._waits)
            self._replies.extend(self._waits)
            self._write_locked(pack(commands))

    def _drop_locked(self) -> None:
        """Forget the connection (a reader blocked on it wakes up: the socket is shut)."""
        conn, self._conn, self._sock, self._reader = self._conn, None, None, None
        self._generation += 1
        self._replies.clear()
        if conn is not None:
            try:
                if conn._sock is not None:
                    conn._sock.shutdown(2)  # socket.SHUT_RDWR
            except OSError:
                pass
            conn.disconnect()

    def close(self) -> None:
        """Drop the connection."""
        with self._lock:
            self._drop_locked()
