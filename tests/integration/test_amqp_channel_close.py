"""The consuming channel: acks on a channel the server closed are reported as not applied
(never misapplied), and consumed queues are listed in the queue catalog.

RabbitMQ closes a channel on its own (``consumer_timeout``, a refused method) and
requeues what the channel held; the close waits in the socket until the client reads.
Here the server is made to close the broker's consuming channel behind its back (a
``basic.ack`` of a delivery tag that does not exist: 406 PRECONDITION_FAILED, the same
close as ``consumer_timeout``). Then:

* ``ack`` of a lease of that channel returns 0 (the worker logs it as not applied), and
  the message comes back, counted as lost;
* the new channel numbers its deliveries from 1 again: an old lease's ack must not act
  on a new delivery (py-amqp reopens a closed channel in place; celeriac does not).

Each test has a vhost of its own (``rabbitmq_url``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

pytest.importorskip("amqp")

from celeriac.brokers.amqp.broker import AMQPBroker
from celeriac.messages import task_message

Q = "closing-q"


@pytest.fixture
def broker(rabbitmq_url: str) -> Iterator[AMQPBroker]:
    b = AMQPBroker(rabbitmq_url, lease_seconds=1.0, options={"consumer_timeout": 0})
    yield b
    b.close()


def close_behind_its_back(broker: AMQPBroker) -> None:
    """Make RabbitMQ close the consuming channel; nothing of it is read yet."""
    with broker._con.lock:
        broker._con.channel().basic_ack(999_999)
    time.sleep(0.5)  # the close is in the broker's socket, unread


def test_ack_after_the_server_closed_the_channel_is_not_applied(broker: AMQPBroker) -> None:
    broker.publish(task_message("t.x", "first", (), {}), Q)
    [d] = broker.receive([Q], owner="w", limit=1, timeout=5.0)
    close_behind_its_back(broker)
    assert broker.ack([d]) == 0  # not "1 settled": RabbitMQ requeued it
    assert not broker.lease_alive(d)
    [again] = broker.receive([Q], owner="w", limit=1, timeout=5.0)
    assert again.message.task_id == "first"
    assert again.redelivered and again.lost_count == 1
    assert broker.ack([again]) == 1
    assert broker.receive([Q], owner="w", limit=1, timeout=1.0) == []
    assert broker.stats(Q).ready == 0


def test_an_old_lease_never_acks_a_delivery_of_the_new_channel(broker: AMQPBroker) -> None:
    broker.publish(task_message("t.x", "old", (), {}), Q)
    [old] = broker.receive([Q], owner="w", limit=1, timeout=5.0)
    close_behind_its_back(broker)
    # a worker whose slots stay busy stops consuming: that read finds the close
    assert broker.hold_back([Q]) == 0
    broker.publish(task_message("t.x", "new", (), {}), Q)
    got = []
    deadline = time.monotonic() + 10
    while len(got) < 2 and time.monotonic() < deadline:  # the new channel: tags from 1
        got += broker.receive([Q], owner="w", limit=2, timeout=1.0)
    assert sorted(d.message.task_id for d in got) == ["new", "old"]
    assert broker.ack([old]) == 0  # its tag is a delivery of the new channel now
    time.sleep(0.3)
    # nothing was acked by mistake: both deliveries of the new channel are still held,
    # and acking them works (a double ack would close the channel: 406)
    assert all(broker.lease_alive(d) for d in got)
    assert broker.ack(got) == 2
    time.sleep(0.3)
    assert broker.receive([Q], owner="w", limit=1, timeout=1.0) == []
    assert all(not broker.lease_alive(d) for d in got)
    stats = broker.stats(Q)
    assert stats.ready == 0 and stats.leased == 0


def test_a_queue_only_consumed_is_in_the_catalog(rabbitmq_url: str,
                                                  broker: AMQPBroker) -> None:
    """A worker's ``-Q`` queue that no producer declared is listed for ``purge``,
    ``deadletters``, the metrics exporter and the dashboard (``celeriac.queue-catalog``)."""
    assert broker.receive(["only-consumed"], owner="w", limit=1, timeout=0.2) == []
    reader = AMQPBroker(rabbitmq_url)
    try:
        assert "only-consumed" in reader.queues()
        assert reader.stats("only-consumed").extra["consumers"] == 1
        entries = reader.stats("celeriac.queue-catalog").ready
        for _ in range(3):  # a worker whose slots stay busy stops and resumes consuming
            broker.hold_back(["only-consumed"])
            assert broker.receive(["only-consumed"], owner="w", limit=1, timeout=0.2) == []
        assert reader.stats("celeriac.queue-catalog").ready == entries  # noted once
    finally:
        reader.close()


def test_a_publish_the_server_refused_leaves_a_confirming_publisher(rabbitmq_url: str) -> None:
    """RabbitMQ closes the publishing channel on a refused publish (here: to a queue's
    dead-letter exchange that does not exist). py-amqp would reopen it in place without
    publisher confirms, and the next ``publish`` would wait for a confirm that never
    comes (its whole 30 s deadline); a new channel in confirm mode is opened instead."""
    import amqp

    broker = AMQPBroker(rabbitmq_url, options={"task_queues": [
        {"name": "to-nowhere", "queue_arguments": {"x-dead-letter-exchange": "no-such-dlx"}}]})
    try:
        with pytest.raises(amqp.exceptions.NotFound):
            broker.dead_letter_message(task_message("t.x", "lost", (), {}), "to-nowhere",
                                       "test")
        started = time.monotonic()
        broker.publish(task_message("t.x", "after", (), {}), Q)  # returns once confirmed
        assert time.monotonic() - started < 15  # not the 30 s wait for a lost confirm
        [d] = broker.receive([Q], owner="w", limit=1, timeout=5.0)
        assert d.message.task_id == "after"
        assert broker.ack([d]) == 1
    finally:
        broker.close()
