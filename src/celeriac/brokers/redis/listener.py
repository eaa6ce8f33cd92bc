"""Waiting for results with redis-py's pub/sub on RESP2: :class:`ResultListener`.

One pub/sub connection per process and configuration, read by a daemon thread,
shared by every waiting thread: a waiter registers, the listener subscribes, and
the waiter's inbox gets ``subscribed`` once Redis confirmed (the waiter then reads
the key: a result written before the subscription is found) and ``message`` for
each notification. After a reconnect the listener subscribes again and every
waiter reads again. The result store uses it where :mod:`.result_waits` (one RESP3
connection, no thread of its own) does not apply: TLS, servers before Redis 6,
no hiredis 3; the cluster's sharded listener (:mod:`.cluster_client`) extends it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

import redis

from ...retry import RetryPolicy
from .client import RETRYABLE_ERRORS, PerProcess, get_client

_LISTENER_ERRORS: tuple[type[BaseException], ...] = (
    *RETRYABLE_ERRORS, redis.exceptions.PubSubError, RuntimeError)
#: how the listener waits between reconnection attempts (back within ~1 s)
RECONNECT_BACKOFF = RetryPolicy(max_retries=None, interval_start=0.05, interval_step=0.2,
                                interval_max=1.0)
PING_INTERVAL = 30.0  # seconds between liveness PINGs on the subscription connection
Inbox = queue.SimpleQueue  # items: ("subscribed", None) or ("message", payload)

class ResultListener:
    """One pub/sub connection of this process, shared by every waiting thread."""

    #: pub/sub commands and the reply types they bring (sharded pub/sub on a cluster)
    SUBSCRIBE, UNSUBSCRIBE, MESSAGE = "subscribe", "unsubscribe", "message"

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._pubsub = client.pubsub()
        self._waiters: dict[bytes, list[Inbox[tuple[str, Any]]]] = {}
        self._pending: dict[bytes, int] = {}  # SUBSCRIBEs sent but not confirmed
        self._broken = False
        self._stopped = False  # a listener whose waiters moved to another (cluster) node
        self._thread: threading.Thread | None = None

    def subscribe(self, channel: str) -> Inbox[tuple[str, Any]]:
        """Register a waiter; its inbox gets ``subscribed`` once Redis confirmed."""
        key = channel.encode("utf-8")
        inbox: Inbox[tuple[str, Any]] = queue.SimpleQueue()
        with self._lock:
            waiters = self._waiters.setdefault(key, [])
            waiters.append(inbox)
            if len(waiters) == 1:
                self._send(self.SUBSCRIBE, key)
            elif self._pending.get(key, 0) <= 0:
                inbox.put(("subscribed", None))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="celeriac-result-listener")
                self._thread.start()
        return inbox

    def unsubscribe(self, channel: str, inbox: Inbox[tuple[str, Any]]) -> None:
        key = channel.encode("utf-8")
        with self._lock:
            waiters = self._waiters.get(key, [])
            if inbox in waiters:
                waiters.remove(inbox)
            if not waiters and key in self._waiters:
                del self._waiters[key]
                self._send(self.UNSUBSCRIBE, key)

    def _send(self, command: str, key: bytes) -> None:
        """Send (un)subscribe with the lock held; a failure makes the loop reconnect."""
        if command == self.SUBSCRIBE:
            self._pending[key] = self._pending.get(key, 0) + 1
        try:
            getattr(self._pubsub, command)(key)
        except RETRYABLE_ERRORS:
            self._broken = True

    def _reconnect(self) -> None:
        with self._lock:
            old, self._pubsub = self._pubsub, self._client.pubsub()
            self._pending = {key: 1 for key in self._waiters}
            self._broken = False
            try:
                old.reset()
            except Exception:  # the old socket is already dead; nothing to release
                pass
            if self._waiters:
                try:
                    getattr(self._pubsub, self.SUBSCRIBE)(*self._waiters)
                except RETRYABLE_ERRORS:
                    self._broken = True

    def _run(self) -> None:
        pauses, last_ping = RECONNECT_BACKOFF.intervals(), time.monotonic()
        while not self._stopped:
            try:
                if self._broken:
                    self._reconnect()
                if self._waiters and time.monotonic() - last_ping > PING_INTERVAL:
                    last_ping = time.monotonic()
                    with self._lock:  # finds a dead connection; the reply is a "pong" message
                        self._pubsub.ping()
                message = self._pubsub.get_message(timeout=1.0)
                pauses = RECONNECT_BACKOFF.intervals()
                if message is not None:
                    self._dispatch(message)
            except _LISTENER_ERRORS:
                self._broken = True
                time.sleep(next(pauses))

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind, key = message.get("type"), message.get("channel")
        if not isinstance(key, bytes):
            return
        with self._lock:
            if kind == self.SUBSCRIBE:
                left = max(0, self._pending.get(key, 0) - 1)
                self._pending[key] = left
                if left:
                    return
                item: tuple[str, Any] = ("subscribed", None)
            elif kind == self.MESSAGE:
                item = ("message", message.get("data"))
            else:
                return
            for inbox in self._waiters.get(key, ()):
                inbox.put(item)


_listeners: PerProcess[ResultListener] = PerProcess()


def listener_for(url: str, options: Mapping[str, Any]) -> ResultListener:
    """The process-wide listener for ``url`` (a new one after a fork)."""
    key = (url, repr(sorted((str(k), repr(v)) for k, v in options.items())))
    # own pool without redis-py's health-check PINGs: they would be sent from this
    # thread while another one subscribes; the listener pings itself
    return _listeners.get(key, lambda: ResultListener(
        get_client(url, {**options, "health_check_interval": 0})))
