"""The publisher-confirm reader (:mod:`celeriac.brokers.amqp.confirming`) on a real RabbitMQ.

Besides the confirm itself, a publishing connection can see a ``basic.nack``
(a full queue that rejects publishes), a ``basic.return`` (a ``mandatory``
message routed nowhere), a ``channel.close`` (a publish to a missing
exchange) and its end (the connection dropped while the confirm is awaited:
here a TCP relay that swallows RabbitMQ's answer, then cuts the connection).
Each test has a vhost of its own (``rabbitmq_url``).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

pytest.importorskip("amqp")

import amqp

from celeriac import Celery
from celeriac.brokers.amqp import confirming, frames
from celeriac.brokers.amqp.broker import AMQPBroker
from celeriac.exceptions import OperationalError
from celeriac.messages import task_message

Q = "confirm-q"


@pytest.fixture
def make(rabbitmq_url: str) -> Iterator[Callable[..., AMQPBroker]]:
    made: list[AMQPBroker] = []

    def factory(url: str = rabbitmq_url, **options: object) -> AMQPBroker:
        broker = AMQPBroker(url, options=options)
        made.append(broker)
        return broker

    yield factory
    for broker in made:
        broker.close()


def depth(chan: Any, queue: str) -> int:
    return int(chan.queue_declare(queue, passive=True)[1])


def publish_raw(broker: AMQPBroker, exchange: str, routing_key: str, *,
                mandatory: bool = False) -> tuple[amqp.Channel, list[confirming.Returned]]:
    """Publish a message with frames of our own on the broker's confirm channel and wait
    for its confirm with :func:`confirming.wait`."""
    returned: list[confirming.Returned] = []
    with broker._pub.lock:
        chan = broker._pub.channel()
        conn = chan.connection
        props = frames.encode_properties({"delivery_mode": 2, "content_type": "text/plain"})
        frames.send(conn, frames.publish_frames(chan.channel_id, exchange, routing_key, props,
                                                b"hello", conn.frame_max, mandatory=mandatory))
        broker._published += 1
        target = broker._published
        confirming.wait(conn, (chan.channel_id, broker._on_confirm, broker._on_nack),
                        lambda: broker._confirmed >= target, time.monotonic() + 10, returned)
    return chan, returned


def test_a_nack_raises_on_the_plain_lane(rabbitmq_url: str,
                                         rabbitmq_channel: Callable[..., Any]) -> None:
    chan = rabbitmq_channel(queues=["capped"])
    app = Celery("confirms", broker=rabbitmq_url, set_as_current=False)
    app.conf.task_ignore_result = True
    app.conf.task_publish_retry = False
    app.conf.task_default_queue = "capped"
    app.conf.task_queues = [{"name": "capped", "queue_arguments": {
        "x-max-length": 2, "x-overflow": "reject-publish"}}]
    task = app.task(name="confirms.t")(lambda: None)
    try:
        task.delay()  # the normal path declares the queue
        task.delay()  # the lane
        with pytest.raises(OperationalError, match=r"basic\.nack"):
            task.delay()
    finally:
        app.close()
    assert depth(chan, "capped") == 2


def test_an_unroutable_mandatory_message_comes_back_before_its_confirm(
        make: Callable[..., AMQPBroker], rabbitmq_channel: Callable[..., Any]) -> None:
    broker = make()
    _, returned = publish_raw(broker, "amq.direct", "nowhere", mandatory=True)
    assert returned == [confirming.Returned(312, "NO_ROUTE", "amq.direct", "nowhere")]
    _, returned = publish_raw(broker, "amq.direct", "nowhere")  # not mandatory: dropped
    assert returned == []
    broker.publish(task_message("t.t", "id-1", (), {}), Q)  # the channel still works
    assert depth(rabbitmq_channel(queues=[Q]), Q) == 1


def test_a_channel_the_server_closes_raises_and_the_next_publish_opens_another(
        make: Callable[..., AMQPBroker], rabbitmq_channel: Callable[..., Any]) -> None:
    broker = make()
    broker.publish(task_message("t.t", "id-1", (), {}), Q)
    generation = broker._pub.generation
    with pytest.raises(amqp.exceptions.NotFound, match="no exchange"):
        publish_raw(broker, "missing-exchange", "x")
    assert not broker._pub._channel.is_open  # type: ignore[union-attr]
    broker.publish(task_message("t.t", "id-2", (), {}), Q)
    assert broker._pub.generation > generation
    assert depth(rabbitmq_channel(queues=[Q]), Q) == 2


class Relay:
    """A TCP relay to RabbitMQ that can swallow the server's bytes and cut every
    connection."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.swallow = threading.Event()
        self.swallowed = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        try:
            while data := source.recv(65536):
                if answers and self.swallow.is_set():
                    self.swallowed.set()
                    continue
                sink.sendall(data)
        except OSError:
            pass

    def cut(self) -> None:
        """Close every relayed connection (both ends); new ones are relayed again."""
        self.swallow.clear()
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self.sockets = []

    def close(self) -> None:
        self.listener.close()
        self.cut()


@pytest.fixture
def relay(rabbitmq_url: str) -> Iterator[tuple[Relay, str]]:
    split = urlsplit(rabbitmq_url)
    relay = Relay((split.hostname or "127.0.0.1", split.port or 5672))
    yield relay, rabbitmq_url.replace(f":{split.port}/", f":{relay.port}/")
    relay.close()


def cut_while_waiting(relay: Relay) -> threading.Thread:
    """Swallow RabbitMQ's answers from now on; cut the connection once one was
    swallowed (the confirm of a publish under way)."""
    relay.swallow.set()

    def cutter() -> None:
        assert relay.swallowed.wait(10)
        time.sleep(0.2)
        relay.cut()

    thread = threading.Thread(target=cutter)
    thread.start()
    return thread


def test_a_connection_dropped_while_waiting_for_the_confirm_is_retried(
        make: Callable[..., AMQPBroker], relay: tuple[Relay, str],
        rabbitmq_channel: Callable[..., Any]) -> None:
    """The publish is retried on a new connection (at least once: the lost confirm may
    have been an ack); without retries the caller gets an OperationalError."""
    proxy, url = relay
    broker = make(url)
    broker.publish(task_message("t.t", "id-1", (), {}), Q)
    generation = broker._pub.generation
    cutter = cut_while_waiting(proxy)
    broker.publish(task_message("t.t", "id-2", (), {}), Q)
    cutter.join()
    assert broker._pub.generation > generation
    assert depth(rabbitmq_channel(queues=[Q]), Q) >= 2

    once = make(url, retry_policy={"max_retries": 0})
    once.publish(task_message("t.t", "id-3", (), {}), Q)
    proxy.swallowed.clear()
    cutter = cut_while_waiting(proxy)
    with pytest.raises(OperationalError):
        once.publish(task_message("t.t", "id-4", (), {}), Q)
    cutter.join()


def test_a_plain_delay_whose_connection_drops_is_retried(
        relay: tuple[Relay, str], rabbitmq_channel: Callable[..., Any]) -> None:
    proxy, url = relay
    app = Celery("confirms", broker=url, set_as_current=False)
    app.conf.task_ignore_result = True
    task = app.task(name="confirms.t")(lambda: None)
    try:
        task.delay()
        task.delay()  # the lane
        cutter = cut_while_waiting(proxy)
        sent = task.delay()
        cutter.join()
    finally:
        app.close()
    chan = rabbitmq_channel(queues=["celery"])
    ids = []
    while (got := chan.basic_get("celery", no_ack=True)) is not None:
        ids.append(got.properties["correlation_id"])
    assert sent.id in ids and len(ids) >= 3
