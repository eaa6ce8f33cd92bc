"""RabbitMQ broker behaviour the contract suite cannot show: leases that end with the
holder's connection (fencing), redelivery counting on classic and quorum queues, queues
declared by someone else, delays through kombu's layout, reconnection after the server
closed every connection of the vhost, and uncounted give-back on close.

Each test has a vhost of its own (``rabbitmq_url``).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest

pytest.importorskip("amqp")

import amqp

from celeriac.brokers.amqp.broker import AMQPBroker
from celeriac.brokers.base import Delivery
from celeriac.messages import Message, task_message

Q = "amqp-q"
Maker = Callable[..., AMQPBroker]


def message(n: int) -> Message:
    return task_message("tests.add", f"task-{n}", (n,), {})


def one(broker: AMQPBroker, owner: str = "w", timeout: float = 5.0) -> Delivery:
    got = broker.receive([Q], owner=owner, limit=1, timeout=timeout)
    assert len(got) == 1, got
    return got[0]


@pytest.fixture
def make(rabbitmq_url: str) -> Iterator[Maker]:
    made: list[AMQPBroker] = []

    def factory(**options: object) -> AMQPBroker:
        broker = AMQPBroker(rabbitmq_url, lease_seconds=1.0, options=options)
        made.append(broker)
        return broker

    yield factory
    for broker in made:
        broker.close()


def crash(broker: AMQPBroker) -> None:
    """What a process death does: its sockets close without a goodbye."""
    with broker._con.lock:
        broker._con.reset()  # closes the socket without an AMQP goodbye


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_lost_connection_redelivers_counts_and_fences(make: Maker, queue_type: str) -> None:
    holder, other = make(queue_type=queue_type), make(queue_type=queue_type)
    holder.publish(message(1), Q)
    first = one(holder, "a")
    assert (first.delivery_count, first.lost_count, first.redelivered) == (1, 0, False)
    for expected_lost in (1, 2, 3):
        crash(holder)
        again = one(other, "b")
        assert (again.message.task_id, again.redelivered) == ("task-1", True)
        assert (again.delivery_count, again.lost_count) == (expected_lost + 1, expected_lost)
        assert holder.ack([first]) == 0 and holder.renew([first]) == [False]
        holder, other, first = other, holder, again
    assert holder.ack([first]) == 1
    assert other.receive([Q], owner="c", timeout=0.5) == []


def test_a_lease_is_known_dead_with_its_connection(make: Maker) -> None:
    """A worker does not start a prefetched job whose connection is gone: RabbitMQ has
    given the message back already (``lease_alive``, no round trip)."""
    holder, other = make(), make()
    holder.publish(message(1), Q)
    held = one(holder, "a")
    assert holder.lease_alive(held)
    crash(holder)
    assert not holder.lease_alive(held)
    again = one(other, "b")
    assert again.message.task_id == "task-1" and other.lease_alive(again)
    assert other.ack([again]) == 1
    assert not other.lease_alive(again)  # settled: nothing is held any more


def test_close_gives_back_unleased_messages_uncounted(make: Maker) -> None:
    first = make(prefetch_count=10)
    for n in range(5):
        first.publish(message(n), Q)
    [taken] = first.receive([Q], owner="a", limit=1, timeout=5)
    assert first.stats(Q).ready == 4  # the rest arrived here, not leased
    first.ack([taken])
    first.close()
    second = make()
    got: list[Delivery] = []
    deadline = time.monotonic() + 10
    while len(got) < 4 and time.monotonic() < deadline:
        got += second.receive([Q], owner="b", limit=10, timeout=0.5)
    assert sorted(d.message.task_id for d in got) == [f"task-{n}" for n in range(1, 5)]
    assert all(d.lost_count == 0 and d.delivery_count == 1 for d in got)


def test_queue_declared_with_other_arguments_is_used_as_it_is(rabbitmq_url: str,
                                                              make: Maker) -> None:
    split = urlsplit(rabbitmq_url)
    conn = amqp.Connection(f"{split.hostname}:{split.port}", virtual_host=split.path[1:])
    conn.connect()
    conn.channel().queue_declare(Q, durable=True, auto_delete=False,
                                 arguments={"x-max-length": 1000})
    conn.close()
    broker = make(max_priority=9)
    broker.publish(message(1), Q)
    assert one(broker).message.task_id == "task-1"


def test_delay_goes_through_kombus_layout(make: Maker) -> None:
    broker = make()
    broker.declare_delays()
    start = time.time()
    broker.publish(message(1), Q, not_before=start + 2.0)
    # nothing before it is due (however long the publish took on a loaded machine)
    assert broker.receive([Q], owner="w", timeout=max(0.1, start + 1.7 - time.time())) == []
    got = one(broker, timeout=6)
    waited = time.time() - start
    assert 1.9 < waited < 5.0, waited
    info = got.message.properties["delivery_info"]
    assert info["routing_key"] == Q and info["exchange"].startswith("celery_delayed_")
    assert not [h for h in got.message.headers if h.startswith("x-")]


def test_consumers_resume_after_the_server_closed_every_connection(rabbitmq_url: str,
                                                                   make: Maker) -> None:
    broker = make()
    broker.publish(message(1), Q)
    held = one(broker)
    vhost = urlsplit(rabbitmq_url).path[1:]
    subprocess.run(["rabbitmqctl", "close_all_connections", "--vhost", vhost,
                    "celeriac test: simulated restart"], check=True, capture_output=True,
                   timeout=120)
    time.sleep(0.5)
    again = one(broker, timeout=15)  # reconnects; the held message was requeued
    assert (again.message.task_id, again.lost_count) == ("task-1", 1)
    assert broker.ack([held]) == 0
    broker.publish(message(2), Q)  # the publishing connection reconnects too
    assert broker.ack([again]) == 1
    assert one(broker).message.task_id == "task-2"


def _drain_all(broker: AMQPBroker, owner: str, count: int) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + 15
    while len(got) < count and time.monotonic() < deadline:
        got += broker.receive([Q], owner=owner, limit=count, timeout=0.5)
    return got


def test_hold_back_gives_back_what_was_pushed_ahead_uncounted(make: Maker) -> None:
    """A worker whose slots are all busy with slow tasks holds nothing RabbitMQ pushed
    into its prefetch window: another consumer gets it, uncounted (adaptive prefetch)."""
    first, second = make(), make()
    for n in range(20):
        first.publish(message(n), Q)
    batch = first.receive([Q], owner="a", limit=10, timeout=5)
    assert len(batch) == 10
    running, done = batch[0], batch[1:]
    assert first.ack(done) == 9  # room in the window: RabbitMQ pushes more to `first`
    time.sleep(0.3)
    first.hold_back([Q])
    got = _drain_all(second, "b", 10)
    assert sorted(d.message.task_id for d in got) == sorted(f"task-{n}" for n in range(10, 20))
    assert all(d.lost_count == 0 and d.delivery_count == 1 for d in got)
    assert first.ack([running]) == 1  # the running task's lease is untouched
    second.ack(got)
    assert first.receive([Q], owner="a", timeout=0.3) == []  # consuming again, nothing left


def test_a_receive_asking_for_far_fewer_narrows_the_window(make: Maker) -> None:
    first, second = make(), make()
    for n in range(60):
        first.publish(message(n), Q)
    batch = first.receive([Q], owner="a", limit=40, timeout=5)
    assert len(batch) == 40
    first.ack(batch)  # RabbitMQ fills the window of 40 again, 20 are left
    time.sleep(0.3)
    [one_more] = first.receive([Q], owner="a", limit=1, timeout=5)  # tasks got slow
    assert first._prefetch == 1
    # the surplus went back: all but what the new window of one may push to `first`
    got = _drain_all(second, "b", 18)
    assert len(got) == 18 and all(d.lost_count == 0 for d in got)
    assert one_more.message.task_id not in {d.message.task_id for d in got}
