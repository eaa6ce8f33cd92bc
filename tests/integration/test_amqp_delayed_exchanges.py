"""countdown/eta through a fanout or topic exchange reach the queues an immediate message
reaches, in kombu's native delayed delivery layout (Celery 5.5+).

kombu binds the exchange of a non-direct ``task_queues`` entry to
``celery_delayed_delivery`` with ``#.<routing key>`` and the queue to its exchange with
the same key, and a Celery client publishes a delayed message to ``celery_delayed_27``
with ``<28 bits>.<routing key>``: the exchange then picks the queues when the delay
ends. celeriac declares the same bindings and publishes the same keys, so its delayed
messages fan out, Celery's delayed messages reach the queues celeriac declared, and
kombu's own binding of the same queues is accepted (no ``PRECONDITION_FAILED``).

Each test has a vhost of its own (``rabbitmq_url``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

pytest.importorskip("amqp")
pytest.importorskip("kombu")

import amqp
import kombu
from kombu import Exchange, Queue

from celeriac import Celery
from celeriac.brokers.amqp.broker import AMQPBroker
from celeriac.messages import task_message
from rabbit import connect

FAN = Exchange("d-fan", type="fanout")
TOPIC = Exchange("d-topic", type="topic")
QUEUES = [Queue("d-fan-a", FAN), Queue("d-fan-b", FAN),
          Queue("d-sports", TOPIC, routing_key="news.sports.*"),
          Queue("d-all-news", TOPIC, routing_key="news.#"),
          Queue("d-weather", TOPIC, routing_key="weather.#")]
NAMES = [q.name for q in QUEUES]


@pytest.fixture
def raw(rabbitmq_url: str) -> Iterator[amqp.Channel]:
    conn = connect(rabbitmq_url)
    try:
        yield conn.channel()
        chan = conn.channel()  # the vhost goes to a later test: leave nothing of ours
        for queue in NAMES:
            chan.queue_delete(queue)
        for exchange in ("d-fan", "d-topic"):
            chan.exchange_delete(exchange)
    finally:
        conn.close()


def depths(raw: amqp.Channel, want: dict[str, int], timeout: float = 15.0) -> dict[str, int]:
    """Ready messages per queue once they reach ``want`` (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        got = {q: int(raw.queue_declare(q, passive=True)[1]) for q in NAMES}
        if all(got[q] >= n for q, n in want.items()) or time.monotonic() > deadline:
            time.sleep(0.5)  # and nothing more arrives
            return {q: int(raw.queue_declare(q, passive=True)[1]) for q in NAMES}
        time.sleep(0.1)


def declare_all(rabbitmq_url: str) -> None:
    """What a celeriac worker consuming every queue declares."""
    consumer = AMQPBroker(rabbitmq_url, options={"task_queues": QUEUES})
    try:
        consumer.declare_delays()  # else the first delayed publish declares them
        assert consumer.receive(NAMES, owner="w", timeout=0.2) == []
    finally:
        consumer.close()


def test_delayed_messages_reach_what_the_exchange_routes_to(rabbitmq_url: str,
                                                            raw: amqp.Channel) -> None:
    declare_all(rabbitmq_url)
    app = Celery("delays", broker=rabbitmq_url)
    app.conf.task_queues = QUEUES
    app.conf.task_routes = {"tests.tennis": {"exchange": TOPIC,
                                             "routing_key": "news.sports.tennis"},
                            "tests.audit": {"queue": "d-fan-a"},
                            "tests.rain": {"queue": "d-weather"}}
    try:
        started = time.monotonic()
        for name in ("tests.tennis", "tests.audit", "tests.rain"):
            app.send_task(name, countdown=3)
        assert depths(raw, {}, timeout=0) == dict.fromkeys(NAMES, 0)  # all still delayed
        got = depths(raw, {"d-sports": 1, "d-all-news": 1, "d-fan-a": 1, "d-fan-b": 1,
                           "d-weather": 1})
        assert time.monotonic() - started >= 2.9
        # as an immediate publish: the topic's bindings pick sports and all-news, the
        # fanout reaches both of its queues; one copy per queue
        assert got == {"d-fan-a": 1, "d-fan-b": 1, "d-sports": 1, "d-all-news": 1,
                       "d-weather": 1}
    finally:
        app.close()


def test_a_given_back_delayed_message_returns_to_its_queue_only(rabbitmq_url: str,
                                                                raw: amqp.Channel) -> None:
    """``release(not_before=...)`` (a message early for its ETA, over its rate limit)
    goes back to the queue it came from, never through the fanout again."""
    declare_all(rabbitmq_url)
    broker = AMQPBroker(rabbitmq_url, options={"task_queues": QUEUES})
    try:
        broker.publish(task_message("tests.audit", "fanned", (), {}), "d-fan-a")
        assert depths(raw, {"d-fan-a": 1, "d-fan-b": 1})["d-fan-b"] == 1
        [d] = broker.receive(["d-fan-a"], owner="w", limit=1, timeout=5.0)
        assert broker.release(d, not_before=time.time() + 1)
        again = []
        deadline = time.monotonic() + 15
        while not again and time.monotonic() < deadline:
            again = broker.receive(["d-fan-a"], owner="w", limit=1, timeout=1.0)
        assert [a.message.task_id for a in again] == ["fanned"]
        assert again[0].delivery_count == 2
        assert depths(raw, {})["d-fan-b"] == 1  # not a second copy in b
    finally:
        broker.close()


def test_celery_delayed_messages_and_kombu_bindings(rabbitmq_url: str,
                                                    raw: amqp.Channel) -> None:
    """A Celery 5.5+ client's delayed message (``celery_delayed_27``, ``<bits>.<key>``)
    reaches the queues celeriac bound; kombu binding the same queues is accepted."""
    from kombu.transport.native_delayed_delivery import (
        bind_queue_to_native_delayed_delivery_exchange,
        calculate_routing_key,
    )

    declare_all(rabbitmq_url)
    for key in ("news.sports.tennis", "weather.rain"):  # what celery.app.base sends
        raw.basic_publish(amqp.Message(b"x", delivery_mode=2), exchange="celery_delayed_27",
                          routing_key=calculate_routing_key(1, key))
    got = depths(raw, {"d-sports": 1, "d-all-news": 1, "d-weather": 1})
    assert got == {"d-fan-a": 0, "d-fan-b": 0, "d-sports": 1, "d-all-news": 1,
                   "d-weather": 1}
    with kombu.Connection(rabbitmq_url) as conn:  # a Celery worker starting on them
        for queue in QUEUES:
            bind_queue_to_native_delayed_delivery_exchange(conn, queue)
