"""The Redis broker's broadcast channel, laid out as kombu's Redis transport does.

Fan-out (events on ``celeryev``, control requests on ``celery.pidbox``):
``PUBLISH <prefix>/<db>.<exchange>/<routing key>`` (an empty routing key:
``<prefix>/<db>.<exchange>``) with kombu's JSON envelope; subscribers
``PSUBSCRIBE`` the same name with ``#`` turned into ``*`` (``/0.celeryev/*``,
``/0.celery.pidbox``) on a connection of their own, and filter by AMQP topic
rules. ``<prefix>`` is the ``global_keyprefix`` transport option, as kombu
prefixes ``PUBLISH`` and its subscriptions.

On a Redis Cluster (:class:`ClusterBroadcast`) fan-out is the same plain
pub/sub, published and subscribed on one node per exchange (the master serving
the exchange's name: a message never reaches a subscriber that came after it), and a
mailbox's lists are named ``{<routing key>.<exchange>}`` so its ``BRPOP``
stays in one slot.

Mailboxes (pidbox replies on the direct exchange ``reply.celery.pidbox``):
the list ``<routing key>.<exchange>`` and its priority lists (``\\x06\\x163``,
``6``, ``9``), bound by the member ``<routing key>\\x06\\x16\\x06\\x16<list>``
of ``_kombu.binding.<exchange>``. A reply is ``LPUSH``ed to every list bound
with its routing key (found with ``SMEMBERS``, as kombu routes a direct
exchange), so a real Celery client's reply queue gets celeriac's replies and
the other way round; ``get`` is ``BRPOP`` on the four lists; ``close``
removes the binding (both binding sets) and deletes the lists.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis

from ...exceptions import DecodeError, OperationalError
from .. import fanout
from ..base import Broadcast, BroadcastChannel, Subscription, topic_matches
from .bookkeeping import SEP
from .client import RETRYABLE_ERRORS

PRIORITY_SUFFIXES = ("", f"{SEP}3", f"{SEP}6", f"{SEP}9")


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class _PubSub(Subscription):
    def __init__(self, channel: RedisBroadcast, exchange: str, patterns: Sequence[str]) -> None:
        self.channel, self.exchange = channel, exchange
        self.patterns = list(patterns) or [""]
        self.pubsub = channel.pubsub_for(exchange)
        names = sorted({channel.topic(exchange, p.replace("#", "*")) for p in self.patterns})
        try:
            self.pubsub.psubscribe(*names)
        except RETRYABLE_ERRORS as exc:
            raise OperationalError(f"redis subscribe {names}: {exc}") from exc

    def get(self, timeout: float = 1.0) -> list[Broadcast]:
        out: list[Broadcast] = []
        deadline = time.monotonic() + max(0.0, timeout)
        wait = max(0.0, timeout)
        while True:
            try:
                item = self.pubsub.get_message(timeout=wait)
            except RETRYABLE_ERRORS as exc:
                raise OperationalError(f"redis subscription: {exc}") from exc
            if item is None:
                if out or time.monotonic() >= deadline:
                    return out
                wait = max(0.0, deadline - time.monotonic())
                continue
            if item.get("type") not in ("pmessage", "message"):
                continue
            message = self._decode(item)
            if message is not None:
                out.append(message)
            wait = 0.0

    def _decode(self, item: dict[str, Any]) -> Broadcast | None:
        try:
            message = fanout.loads(item["data"], self.exchange)
        except DecodeError:
            return None
        if message.exchange != self.exchange:
            return None
        if not any(topic_matches(p, message.routing_key) for p in self.patterns):
            return None
        return message

    def close(self) -> None:
        try:
            self.pubsub.close()
        except RETRYABLE_ERRORS:
            pass


class _Mailbox(Subscription):
    def __init__(self, channel: RedisBroadcast, exchange: str, routing_key: str) -> None:
        self.channel, self.exchange, self.routing_key = channel, exchange, routing_key
        self.queue = channel.mailbox_name(routing_key, exchange)
        self.member = f"{routing_key}{SEP}{SEP}{self.queue}"
        self.lists = [channel.key(self.queue + s) for s in PRIORITY_SUFFIXES]
        channel.call(lambda c: c.sadd(channel.key(f"_kombu.binding.{exchange}"), self.member))

    def get(self, timeout: float = 1.0) -> list[Broadcast]:
        got = self.channel.call(lambda c: c.brpop(self.lists, timeout=max(0.01, timeout)))
        if not got:
            return []
        raws = [got[1]]
        for key in self.lists:
            while True:
                raw = self.channel.call(lambda c, k=key: c.rpop(k))
                if raw is None:
                    break
                raws.append(raw)
        out = []
        for raw in raws:
            try:
                out.append(fanout.loads(raw, self.exchange, self.routing_key))
            except DecodeError:
                continue
        return out

    def close(self) -> None:
        ch = self.channel
        try:
            pipe = ch.client.pipeline(transaction=False)
            pipe.srem(ch.key(f"_kombu.binding.{self.exchange}"), self.member)
            pipe.srem(ch.key(f"_kombu.binding_permanent.{self.exchange}"), self.member)
            for key in self.lists:  # one key per DEL: a cluster pipeline takes no more
                pipe.delete(key)
            ch.call(lambda c: pipe.execute())
        except OperationalError:
            pass


class RedisBroadcast(BroadcastChannel):
    """kombu-compatible fan-out and reply mailboxes on one Redis database."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.db = int(client.connection_pool.connection_kwargs.get("db") or 0)

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def mailbox_name(self, routing_key: str, exchange: str) -> str:
        """The reply list of a mailbox (kombu's ``<routing key>.<exchange>``)."""
        return f"{routing_key}.{exchange}"

    def topic(self, exchange: str, routing_key: str) -> str:
        base = f"{self.prefix}/{self.db}.{exchange}"
        return f"{base}/{routing_key}" if routing_key else base

    def pubsub_for(self, exchange: str) -> Any:
        """A pub/sub connection of its own for a subscription to ``exchange``."""
        return self.client.pubsub(ignore_subscribe_messages=True)

    def call(self, fn: Any) -> Any:
        try:
            return fn(self.client)
        except RETRYABLE_ERRORS as exc:
            raise OperationalError(f"redis broadcast: {exc}") from exc

    def publish(self, message: Broadcast) -> None:
        topic = self.topic(message.exchange, message.routing_key)
        self.call(lambda c: c.publish(topic, fanout.dumps(message)))

    def subscribe(self, exchange: str, patterns: Sequence[str] = ("#",)) -> Subscription:
        return _PubSub(self, exchange, patterns)

    def open_mailbox(self, exchange: str, routing_key: str) -> Subscription:
        return _Mailbox(self, exchange, routing_key)

    def send_to_mailbox(self, message: Broadcast) -> bool:
        members = self.call(lambda c: c.smembers(self.key(f"_kombu.binding.{message.exchange}")))
        queues = set()
        for member in members:
            parts = _text(member).split(SEP)
            if len(parts) == 3 and parts[0] == message.routing_key:
                queues.add(parts[2])
        if not queues:
            return False
        text = fanout.dumps(message)
        self.call(lambda c: [c.lpush(self.key(q), text) for q in sorted(queues)])
        return True


class ClusterBroadcast(RedisBroadcast):
    """The channel on a Redis Cluster: plain pub/sub (a cluster delivers a ``PUBLISH``
    to subscribers on every node) and mailbox lists in one slot each, named
    ``{<routing key>.<exchange>}`` (Celery has no cluster transport to agree with)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.db = 0

    def mailbox_name(self, routing_key: str, exchange: str) -> str:
        return f"{{{routing_key}.{exchange}}}"

    def node_of(self, exchange: str) -> Any:
        """The master serving the exchange's name: its publishes and subscriptions all go
        there. A cluster forwards a ``PUBLISH`` to the other nodes over its bus, later:
        a subscriber on another node could still get a message published before it
        subscribed."""
        return self.client.get_node_from_key(  # type: ignore[attr-defined]
            f"{self.prefix}/{self.db}.{exchange}")

    def pubsub_for(self, exchange: str) -> Any:
        return self.call(lambda c: c.pubsub(node=self.node_of(exchange),
                                            ignore_subscribe_messages=True))

    def publish(self, message: Broadcast) -> None:
        topic = self.topic(message.exchange, message.routing_key)
        text = fanout.dumps(message)
        self.call(lambda c: c.publish(topic, text, target_nodes=self.node_of(message.exchange)))
