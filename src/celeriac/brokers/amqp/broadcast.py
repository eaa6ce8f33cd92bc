"""The RabbitMQ broker's broadcast channel, laid out as kombu declares it on AMQP.

Exchanges (``tests/fixtures/events-amqp.json``, ``pidbox-amqp.json``): an
exchange whose name ends in ``pidbox`` is a non-durable **fanout** exchange
(``celery.pidbox``, control requests) or, when it starts with ``reply.``, a
non-durable **direct** one (``reply.celery.pidbox``, replies); any other
(``celeryev``, ``event_exchange``) is a durable **topic** exchange.

* ``publish`` sends to the exchange (declared first, once per connection)
  with ``delivery_mode`` 2 or 1, ``priority`` 0, ``content_type``,
  ``content_encoding`` and the headers, as kombu does.
* ``subscribe`` opens a connection of its own and declares an exclusive,
  auto-delete queue bound with each pattern: ``celeryev.<uuid>`` with
  ``x-message-ttl`` 5000 and ``x-expires`` 60000 for events (Celery's
  ``event_queue_ttl``/``event_queue_expires`` defaults), ``<uuid>.<exchange>``
  with ``x-expires`` 10000 and ``x-message-ttl`` 300000 for control requests
  (Celery names it ``<node>.celery.pidbox``; the name does not take part in
  routing, and a unique one never collides with a Celery worker of the same
  node name). It consumes without acks, as kombu does.
* ``open_mailbox`` declares ``<routing key>.<exchange>`` (exclusive,
  auto-delete, ``x-expires`` 10000, ``x-message-ttl`` 300000) bound to the
  direct exchange with the routing key, on a connection of its own;
  ``close`` deletes it.
* ``send_to_mailbox`` publishes with ``mandatory`` on a channel in confirm
  mode and waits for the confirm: RabbitMQ returns an unroutable message
  (``basic.return``, no mailbox bound) before confirming it, so False means
  nobody listens.

A subscription whose connection broke raises ``OperationalError`` once; its
next ``get`` reconnects and declares its queue again (what was published in
between is lost, as for any fan-out).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import amqp

from ...exceptions import OperationalError
from ..base import Broadcast, BroadcastChannel, Subscription, redact
from .connection import RETRYABLE_ERRORS, Link

_T = TypeVar("_T")

EVENT_QUEUE_ARGS = {"x-message-ttl": 5000, "x-expires": 60000}
PIDBOX_QUEUE_ARGS = {"x-expires": 10000, "x-message-ttl": 300000}


def exchange_kind(exchange: str) -> tuple[str, bool]:
    """``(type, durable)`` of ``exchange`` as kombu declares Celery's."""
    if exchange.endswith("pidbox"):
        return ("direct" if exchange.startswith("reply.") else "fanout"), False
    return "topic", True


def declare_exchange(chan: amqp.Channel, exchange: str) -> None:
    kind, durable = exchange_kind(exchange)
    chan.exchange_declare(exchange, kind, durable=durable, auto_delete=False)


def to_amqp(message: Broadcast) -> amqp.Message:
    return amqp.Message(message.body, content_type=message.content_type,
                        content_encoding=message.content_encoding,
                        delivery_mode=2 if message.persistent else 1, priority=0,
                        application_headers=dict(message.headers))


def from_amqp(raw: amqp.Message, exchange: str) -> Broadcast:
    props = raw.properties
    info = raw.delivery_info or {}
    body = raw.body if isinstance(raw.body, bytes) else str(raw.body).encode("utf-8")
    return Broadcast(exchange=str(info.get("exchange") or exchange),
                     routing_key=str(info.get("routing_key") or ""), body=body,
                     headers=dict(props.get("application_headers") or {}),
                     content_type=str(props.get("content_type") or "application/json"),
                     content_encoding=str(props.get("content_encoding") or "utf-8"),
                     persistent=props.get("delivery_mode") == 2)


class _Queue(Subscription):
    """An exclusive queue on a connection of its own, consumed without acks."""

    def __init__(self, owner: AMQPBroadcast, exchange: str, name: str, keys: Sequence[str],
                 arguments: Mapping[str, Any], *, delete_on_close: bool = False) -> None:
        self.owner, self.exchange, self.name = owner, exchange, name
        self.keys = list(keys) or [""]
        self.arguments = dict(arguments)
        self.delete_on_close = delete_on_close
        self.link = Link(owner.url, owner.options, confirms=False)
        self._got: list[Broadcast] = []
        self._ready_generation = -1
        self._closed = False
        try:
            self.owner.call("subscribe", self.link, self._ensure)
        except BaseException:
            self.link.close()  # no caller will: its socket is not left to the collector
            raise

    def _ensure(self, chan: amqp.Channel) -> None:
        if self._ready_generation == self.link.generation:
            return
        declare_exchange(chan, self.exchange)
        chan.queue_declare(self.name, durable=False, exclusive=True, auto_delete=True,
                           arguments=self.arguments)
        for key in self.keys:
            chan.queue_bind(self.name, self.exchange, routing_key=key)
        chan.basic_consume(self.name, no_ack=True, callback=self._arrived)
        self._ready_generation = self.link.generation

    def _arrived(self, raw: amqp.Message) -> None:
        self._got.append(from_amqp(raw, self.exchange))

    def get(self, timeout: float = 1.0) -> list[Broadcast]:
        deadline = time.monotonic() + max(0.0, timeout)

        def read(chan: amqp.Channel) -> list[Broadcast]:
            self._ensure(chan)
            conn = chan.connection
            wait = max(0.0, deadline - time.monotonic())
            while True:
                try:
                    conn.drain_events(timeout=wait)
                except TimeoutError:
                    pass
                if self._got or time.monotonic() >= deadline:
                    break
                wait = max(0.0, deadline - time.monotonic())
            while True:  # what else already arrived, without waiting
                try:
                    conn.drain_events(timeout=0)
                except TimeoutError:
                    break
            got, self._got = self._got, []
            return got

        if self._closed:
            return []
        return self.owner.call("subscription", self.link, read)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.delete_on_close:
            try:
                with self.link.lock:
                    if self.link.connected:
                        self.link.channel().queue_delete(self.name)
            except Exception:
                pass
        self.link.close()


class AMQPBroadcast(BroadcastChannel):
    """kombu-compatible fan-out and reply mailboxes on RabbitMQ (see the module docstring)."""

    def __init__(self, url: str, options: Mapping[str, Any]) -> None:
        self.url = url
        self.options = dict(options)
        self._publisher = Link(url, self.options, confirms=False, on_open=self._opened)
        self._replier = Link(url, self.options, confirms=True, on_open=self._opened_confirm)
        self._declared: set[tuple[int, str]] = set()
        self._state = threading.Lock()
        self._published = 0
        self._confirmed = 0
        self._returned = False

    def call(self, what: str, link: Link, fn: Callable[[amqp.Channel], _T]) -> _T:
        """One attempt of ``fn`` on ``link``: a connection error resets the link and
        raises OperationalError (callers retry: the worker's loops, the client's poll)."""
        with link.lock:
            try:
                return fn(link.channel())
            except RETRYABLE_ERRORS as exc:
                link.reset()
                raise OperationalError(
                    f"RabbitMQ broadcast {what} at {redact(self.url)}: {exc}") from exc

    # -- publishing ----------------------------------------------------------------
    def _opened(self, chan: amqp.Channel) -> None:
        with self._state:
            self._declared = {d for d in self._declared if d[0] != id(self._publisher)}

    def _opened_confirm(self, chan: amqp.Channel) -> None:
        with self._state:
            self._declared = {d for d in self._declared if d[0] != id(self._replier)}
        self._published = self._confirmed = 0
        chan.events["basic_ack"].add(self._on_ack)
        chan.events["basic_nack"].add(self._on_ack)
        chan.events["basic_return"].add(self._on_return)

    def _on_ack(self, tag: int, multiple: bool) -> None:
        self._confirmed = max(self._confirmed, tag)

    def _on_return(self, *args: Any) -> None:
        self._returned = True

    def _declare(self, link: Link, chan: amqp.Channel, exchange: str) -> None:
        key = (id(link), exchange)
        if key not in self._declared:
            declare_exchange(chan, exchange)
            with self._state:
                self._declared.add(key)

    def publish(self, message: Broadcast) -> None:
        def send(chan: amqp.Channel) -> None:
            self._declare(self._publisher, chan, message.exchange)
            chan._basic_publish(to_amqp(message), exchange=message.exchange,
                                routing_key=message.routing_key)

        self.call("publish", self._publisher, send)

    def send_to_mailbox(self, message: Broadcast) -> bool:
        def send(chan: amqp.Channel) -> bool:
            self._declare(self._replier, chan, message.exchange)
            self._returned = False
            chan._basic_publish(to_amqp(message), exchange=message.exchange,
                                routing_key=message.routing_key, mandatory=True)
            self._published += 1
            deadline = time.monotonic() + 30.0
            while self._confirmed < self._published:
                if time.monotonic() > deadline:
                    raise TimeoutError("no publisher confirm from RabbitMQ in time")
                try:
                    chan.connection.drain_events(timeout=1.0)
                except TimeoutError:
                    continue
            return not self._returned

        return self.call("send_to_mailbox", self._replier, send)

    # -- receiving -------------------------------------------------------------------
    def subscribe(self, exchange: str, patterns: Sequence[str] = ("#",)) -> Subscription:
        if exchange.endswith("pidbox"):
            return _Queue(self, exchange, f"{uuid.uuid4()}.{exchange}", patterns,
                          PIDBOX_QUEUE_ARGS)
        return _Queue(self, exchange, f"{exchange}.{uuid.uuid4()}", patterns, EVENT_QUEUE_ARGS)

    def open_mailbox(self, exchange: str, routing_key: str) -> Subscription:
        return _Queue(self, exchange, f"{routing_key}.{exchange}", [routing_key],
                      PIDBOX_QUEUE_ARGS, delete_on_close=True)

    def close(self) -> None:
        self._publisher.close()
        self._replier.close()
