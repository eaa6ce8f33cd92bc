"""RabbitMQ's hot paths read and written by celeriac itself (:mod:`celeriac.brokers.amqp.
frames`, :mod:`.reading`), on a real server: deliveries decoded here equal py-amqp's,
a batched ``multiple`` ack never settles a delivery still held, a reject in the same
batch still dead-letters, a publish returns only once confirmed and a ``basic.nack``
raises.

Each test has a vhost of its own (``rabbitmq_url``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

pytest.importorskip("amqp")

import amqp

from celeriac.brokers.amqp import reading
from celeriac.brokers.amqp.broker import AMQPBroker
from celeriac.brokers.base import Delivery
from celeriac.exceptions import OperationalError
from celeriac.messages import Message, task_message
from rabbit import connect

Q = "hot-q"
Maker = Callable[..., AMQPBroker]


def message(n: int) -> Message:
    return task_message("tests.add", f"task-{n}", (n,), {})


@pytest.fixture
def make(amqp_brokers: Maker) -> Maker:
    return lambda **options: amqp_brokers(lease_seconds=None, **options)


@pytest.fixture
def raw(rabbitmq_url: str) -> Iterator[amqp.Channel]:
    conn = connect(rabbitmq_url)
    yield conn.channel()
    conn.close()


def depth(chan: amqp.Channel, queue: str) -> int:
    return int(chan.queue_declare(queue, passive=True)[1])


def take(broker: AMQPBroker, count: int) -> list[Delivery]:
    got: list[Delivery] = []
    for _ in range(50):
        got += broker.receive([Q], owner="w", limit=count - len(got), timeout=0.5)
        if len(got) >= count:
            break
    assert len(got) == count, got
    return got


def crash(broker: AMQPBroker) -> None:
    """What a process death does: its sockets close without a goodbye."""
    with broker._con.lock:
        broker._con.reset()


def settled(broker: AMQPBroker) -> None:
    """Wait until RabbitMQ has processed what ``broker`` wrote on its channel: a basic.ack
    has no reply, and a socket closed by a crash drops what the server had not read yet
    (a lost ack only runs a task again, which at-least-once allows). A synchronous method
    on the same channel is answered after the frames before it."""
    with broker._con.lock:
        broker._con.channel().queue_declare(Q, passive=True)


def test_deliveries_read_here_equal_what_py_amqp_reads(rabbitmq_url: str,
                                                       raw: amqp.Channel) -> None:
    """Every property and header type, an empty body and one spread over several body
    frames, read once by :func:`reading.drain` and once by py-amqp."""
    raw.exchange_declare("both", "fanout", durable=False, auto_delete=True)
    for name in ("fast", "slow"):
        raw.queue_declare(name, durable=False, auto_delete=False)
        raw.queue_bind(name, "both")
    headers: dict[str, Any] = {
        "s": "é 漢", "b": b"\xff\x00", "i": -7, "l": 2**40, "f": 0.25, "t": True, "v": None,
        "a": [1, "x", [None]], "n": {"x": {"y": 1}}, "d": Decimal("1.5"),
        "ts": datetime(2021, 5, 6, 7, 8, 9)}
    bodies = [b"", b"small", bytes(range(256)) * 2000]  # 512 KB: several body frames
    for body in bodies:
        raw.basic_publish(amqp.Message(body, content_type="application/json",
                                       content_encoding="utf-8", priority=3,
                                       delivery_mode=2, correlation_id="c", reply_to="r",
                                       expiration="60000", message_id="m",
                                       timestamp=1700000000, type="t", app_id="a",
                                       application_headers=headers),
                          exchange="both", routing_key="rk")
    seen: dict[str, list[Any]] = {"fast": [], "slow": []}
    fast_conn, slow_conn = connect(rabbitmq_url), connect(rabbitmq_url)
    reading.install(fast_conn)
    try:
        for name, conn in (("fast", fast_conn), ("slow", slow_conn)):
            chan = amqp.Channel(conn, auto_decode=False)  # as celeriac opens channels
            chan.open()
            chan.basic_consume(
                name, no_ack=True, callback=lambda m, name=name: seen[name].append(
                    (m.properties, m.body, {k: m.delivery_info[k] for k in (
                        "exchange", "routing_key", "redelivered", "delivery_tag")})))
        for _ in range(200):
            if len(seen["fast"]) == len(bodies):
                break
            reading.drain(fast_conn, 0.05, once=True)
        while len(seen["slow"]) < len(bodies):
            slow_conn.drain_events(timeout=5)
    finally:
        fast_conn.close()
        slow_conn.close()
    fast = [(p, b, {k: v for k, v in i.items() if k != "delivery_tag"})
            for p, b, i in seen["fast"]]
    slow = [(p, b, {k: v for k, v in i.items() if k != "delivery_tag"})
            for p, b, i in seen["slow"]]
    assert [b for _, b, _ in fast] == bodies
    slow = [(p, b or b"", i) for p, b, i in slow]  # py-amqp: "" for an empty body
    assert fast == slow
    assert fast[0][0]["application_headers"] == headers


def test_a_batched_ack_never_settles_a_delivery_still_held(make: Maker) -> None:
    broker, other = make(), make()
    for n in range(8):
        broker.publish(message(n), Q)
    got = take(broker, 8)
    by_id = {d.message.task_id: d for d in got}
    done = [by_id[f"task-{n}"] for n in (0, 1, 2, 4, 5)]
    assert broker.ack(done) == 5  # one multiple ack for 0-2, then 4 and 5
    settled(broker)
    crash(broker)  # what it still held (3, 6, 7) comes back, nothing else
    back = take(other, 3)
    assert sorted(d.message.task_id for d in back) == ["task-3", "task-6", "task-7"]
    assert other.ack(back) == 3
    assert other.receive([Q], owner="w", timeout=0.3) == []


def test_a_reject_in_the_same_batch_as_acks_still_dead_letters(
        make: Maker, raw: amqp.Channel) -> None:
    queues = [{"name": Q, "exchange": Q, "routing_key": Q,
               "queue_arguments": {"x-dead-letter-exchange": "",
                                   "x-dead-letter-routing-key": "hot-dead"}},
              {"name": "hot-dead"}]
    raw.queue_declare("hot-dead", durable=True, auto_delete=False)
    broker, other = make(task_queues=queues), make(task_queues=queues)
    for n in range(4):
        broker.publish(message(n), Q)
    got = {d.message.task_id: d for d in take(broker, 4)}
    held, release = threading.Event(), threading.Event()

    def hold() -> None:  # the acks and the reject queue up behind the lock: one flush
        with broker._con.lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    assert broker.dead_letter(got["task-2"], "rejected: test")
    assert broker.ack([got["task-0"], got["task-1"], got["task-3"]]) == 3
    release.set()
    holder.join()
    assert broker.receive([Q], owner="w", timeout=0.2) == []  # flushes the batch
    for _ in range(50):
        dead = raw.basic_get("hot-dead", no_ack=True)
        if dead is not None:
            break
        broker.receive([Q], owner="w", timeout=0.1)
    assert dead is not None
    assert dead.properties["application_headers"]["x-death"][0]["reason"] == "rejected"
    settled(broker)
    crash(broker)
    assert other.receive([Q], owner="w", timeout=0.5) == []  # 0, 1 and 3 were acked


def test_publish_returns_once_confirmed_and_a_nack_raises(make: Maker,
                                                         raw: amqp.Channel) -> None:
    broker = make()
    for n in range(20):
        broker.publish(message(n), Q)
        assert depth(raw, Q) == n + 1  # confirmed: RabbitMQ holds it already
    capped = make(task_queues=[{"name": "capped", "queue_arguments": {
        "x-max-length": 1, "x-overflow": "reject-publish"}}])
    capped.publish(message(100), "capped")
    with pytest.raises(OperationalError, match=r"basic\.nack"):
        capped.publish(message(101), "capped")
    assert depth(raw, "capped") == 1


def test_heartbeats_flow_through_the_fast_reader(make: Maker) -> None:
    """With AMQP heartbeats on (1 s), an idle consumer reading through :mod:`.reading`
    keeps its connection: the server's heartbeats reach py-amqp and ours go out."""
    broker = make(heartbeat=1)
    assert broker.receive([Q], owner="w", timeout=0.2) == []
    generation = broker._con.generation
    for _ in range(8):  # 4 s: RabbitMQ closes a silent connection after 2 to 3 s
        assert broker.receive([Q], owner="w", timeout=0.5) == []
    assert broker._con.generation == generation
    make().publish(message(1), Q)
    got = take(broker, 1)
    assert got[0].message.task_id == "task-1" and broker.ack(got) == 1
    assert broker._con.generation == generation
