"""Dead letters, the queue catalog, counts and purges of the RabbitMQ broker.

AMQP cannot browse a queue, so listing reads with ``basic.get`` on a
short-lived channel and closes it: RabbitMQ puts every message read back at
its place (classic queues keep their order). ``retry`` acks only the one
message it re-publishes. Dead letters carry ``x-celeriac-dead-id``,
``-reason``, ``-queue`` and ``-at`` headers next to the counters.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import amqp
from amqp import exceptions as amqp_errors

from ...messages import Message
from ..base import DeadLetter
from . import topology, wire
from .connection import retrying

if TYPE_CHECKING:
    from .broker import AMQPBroker

logger = logging.getLogger("celeriac.brokers.amqp")
_T = TypeVar("_T")
_SCAN_CAP = 100_000


class ChannelReset(amqp_errors.RecoverableChannelError):
    """The server closed a channel on purpose (a declaration it refused): open a new one."""


def temp_channel(conn: amqp.Connection) -> amqp.Channel:
    chan = amqp.Channel(conn, auto_decode=False)
    chan.open()
    return chan


def close_quietly(chan: amqp.Channel) -> None:
    if chan.is_open:
        try:
            chan.close()
        except Exception:
            pass


def passive_count(conn: amqp.Connection, queue: str) -> tuple[int, int] | None:
    """``(messages, consumers)`` of ``queue``, None if it does not exist."""
    chan = temp_channel(conn)
    try:
        return topology.count(chan, queue)
    finally:
        close_quietly(chan)


def with_scan_channel(broker: AMQPBroker, what: str,
                      call: Callable[[amqp.Channel], _T]) -> _T:
    """Run ``call`` on a fresh channel of the publishing connection, closed afterwards
    (which puts back every message it read and did not ack)."""

    def run(pub: amqp.Channel) -> _T:
        chan = temp_channel(pub.connection)
        try:
            return call(chan)
        finally:
            close_quietly(chan)

    return retrying(broker.url, what, broker._pub, run, broker.retry_policy)


def register(broker: AMQPBroker, chan: amqp.Channel, queue: str) -> None:
    """Note ``queue`` in the catalog (and make its dead-letter queue)."""
    topology.declare_dead_queue(chan, queue)
    topology.declare_catalog(chan)
    broker._publish_on(chan, amqp.Message(queue.encode("utf-8"), delivery_mode=2),
                       "", topology.CATALOG)


def register_consumed(chan: amqp.Channel, queues: list[str], delay_queue_type: str) -> None:
    """Before a consuming channel consumes ``queues``: note them in the catalog, as
    :func:`register` does for a queue published to (a worker's ``-Q`` queue that no
    producer declared is listed too; unconfirmed, noted again by every new consumer),
    and declare the delay layout, as a Celery 5.5+ worker does at start (its clients
    publish countdowns into it), on a channel of its own: a layout that exists with
    other arguments is used as it is (warned) and the consuming channel stays open."""
    topology.declare_catalog(chan)
    for queue in queues:
        topology.declare_dead_queue(chan, queue)
        chan.basic_publish(amqp.Message(queue.encode("utf-8"), delivery_mode=2), "",
                           topology.CATALOG)
    layout = temp_channel(chan.connection)
    try:
        topology.declare_delay_layout(layout, delay_queue_type)
    except amqp_errors.PreconditionFailed as exc:
        logger.warning("RabbitMQ's delay layout exists with other arguments than "
                       "delay_queue_type %r; using it as it is (%s)", delay_queue_type, exc)
    finally:
        close_quietly(layout)


def catalog(pub: amqp.Channel, broker: AMQPBroker) -> list[str]:
    """The queue names ever registered; compacts the catalog when it holds duplicates."""
    chan = temp_channel(pub.connection)
    try:
        topology.declare_catalog(chan)
        names: list[str] = []
        last_tag = 0
        while len(names) < _SCAN_CAP:
            got = chan.basic_get(topology.CATALOG)
            if got is None:
                break
            body = got.body if isinstance(got.body, bytes) else str(got.body).encode()
            names.append(body.decode("utf-8", "replace"))
            last_tag = got.delivery_info["delivery_tag"]
        unique = list(dict.fromkeys(names))
        if len(names) > 2 * len(unique) + 8:
            for name in unique:
                broker._publish_on(pub, amqp.Message(name.encode("utf-8"), delivery_mode=2),
                                   "", topology.CATALOG)
            broker._wait_confirms(pub)
            chan.basic_ack(last_tag, multiple=True)
        return sorted(unique)
    finally:
        close_quietly(chan)


def store_dead(pub: amqp.Channel, broker: AMQPBroker, message: Message, queue: str,
               reason: str, counters: wire.Counters) -> str:
    dead_id = uuid.uuid4().hex
    if queue not in broker._declared:  # the catalog lists it, so retry finds the letter
        register(broker, pub, queue)
    headers = {wire.DEAD_ID: dead_id, wire.DEAD_REASON: reason, wire.DEAD_QUEUE: queue,
               wire.DEAD_AT: time.time()}
    msg = wire.encode(message, message.priority, counters=counters, extra_headers=headers)
    msg.properties.pop("expiration", None)
    spec = broker._specs.get(queue)
    if spec is not None and spec.dead_letter_exchange is not None:  # the user's DLX
        broker._publish_on(pub, msg, spec.dead_letter_exchange, spec.dead_letter_routing_key)
    else:
        broker._publish_on(pub, msg, "", topology.dead_queue(queue))
    broker._wait_confirms(pub)
    return dead_id


def _scan(chan: amqp.Channel, queue: str, limit: int) -> list[tuple[int, DeadLetter]]:
    out: list[tuple[int, DeadLetter]] = []
    while len(out) < limit:
        got = chan.basic_get(topology.dead_queue(queue))
        if got is None:
            break
        out.append((int(got.delivery_info["delivery_tag"]), to_dead_letter(got, queue)))
    return out


def to_dead_letter(raw: amqp.Message, queue: str) -> DeadLetter:
    headers = dict(raw.properties.get("application_headers") or {})
    message, counters, _ = wire.decode(raw, queue)
    info = message.properties.get("delivery_info")
    if isinstance(info, dict):
        message = message.with_properties(delivery_info={"exchange": "", "routing_key": queue})
    at = headers.get(wire.DEAD_AT)
    return DeadLetter(
        id=str(headers.get(wire.DEAD_ID) or ""), queue=str(headers.get(wire.DEAD_QUEUE) or queue),
        reason=str(headers.get(wire.DEAD_REASON) or ""), message=message,
        delivery_count=counters.deliveries, lost_count=counters.lost,
        first_delivered_at=counters.first_delivered_at,
        dead_at=float(at) if isinstance(at, (int, float)) else 0.0)


def _dead_queues(chan: amqp.Channel, broker: AMQPBroker, queue: str | None) -> list[str]:
    if queue is not None:
        return [queue]
    return catalog(broker._pub.channel(), broker)


def read_dead(chan: amqp.Channel, broker: AMQPBroker, queue: str | None,
              limit: int) -> list[DeadLetter]:
    letters: list[DeadLetter] = []
    for name in _dead_queues(chan, broker, queue):
        if passive_count(chan.connection, topology.dead_queue(name)) is None:
            continue
        letters.extend(letter for _, letter in _scan(chan, name, max(0, limit)))
    letters.sort(key=lambda x: x.dead_at)
    return letters[:max(0, limit)]


def retry_dead(chan: amqp.Channel, broker: AMQPBroker, dead_id: str) -> bool:
    for name in _dead_queues(chan, broker, None):
        if passive_count(chan.connection, topology.dead_queue(name)) is None:
            continue
        for tag, letter in _scan(chan, name, _SCAN_CAP):
            if letter.id == dead_id:
                pub = broker._pub.channel()
                broker._send(pub, [(letter.message, letter.queue, letter.message.priority,
                                    None, {})])  # {}: to the queue itself, not its exchange
                chan.basic_ack(tag)
                return True
    return False


def purge_dead(chan: amqp.Channel, broker: AMQPBroker, queue: str | None) -> int:
    total = 0
    for name in _dead_queues(chan, broker, queue):
        if passive_count(chan.connection, topology.dead_queue(name)) is None:
            continue
        total += int(chan.queue_purge(topology.dead_queue(name)) or 0)
    return total


def purge(pub: amqp.Channel, queue: str) -> int:
    chan = temp_channel(pub.connection)
    try:
        if topology.count(chan, queue) is None:
            return 0
        return int(chan.queue_purge(queue) or 0)
    finally:
        close_quietly(chan)


def counts(pub: amqp.Channel, queue: str) -> tuple[int, int, int]:
    """``(ready, consumers, dead)`` as RabbitMQ counts them (0 for a queue never declared)."""
    ready, consumers = passive_count(pub.connection, queue) or (0, 0)
    dead = passive_count(pub.connection, topology.dead_queue(queue)) or (0, 0)
    return ready, consumers, dead[0]
