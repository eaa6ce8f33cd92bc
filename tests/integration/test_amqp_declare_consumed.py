"""``AMQPBroker.declare_consumed``: what a worker declares before it says ``ready.``.

After it, a plain ``basic_publish`` with ``mandatory=True`` (nothing declared by the
publisher) reaches the queue through the default exchange and through the queue's own
exchange, before anything was received; a queue that exists with other arguments is
used as it is (the declaration still succeeds) and then consumed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from celeriac.messages import task_message

pytest.importorskip("amqp")


def publish_mandatory(chan: Any, exchange: str, routing_key: str) -> list[str]:
    """Publish one plain message (``mandatory=True``, confirmed); the basic.return replies."""
    import amqp

    returned: list[str] = []
    chan.events["basic_return"].add(lambda exc, ex, key, msg: returned.append(f"{ex}/{key}"))
    chan.basic_publish_confirm(amqp.Message(b"{}"), exchange=exchange,
                               routing_key=routing_key, mandatory=True, confirm_timeout=30)
    return returned


def test_declared_queue_takes_a_plain_publish_before_any_receive(
        amqp_brokers: Callable[..., Any], rabbitmq_channel: Callable[..., Any]) -> None:
    import amqp

    queue = "ready-declared"
    chan = rabbitmq_channel(queues=[queue], exchanges=[queue])
    with pytest.raises(amqp.exceptions.NotFound):
        chan.queue_declare(queue, passive=True)
    chan = rabbitmq_channel()
    broker = amqp_brokers()
    broker.declare_consumed([queue, queue])
    assert publish_mandatory(chan, "", queue) == []
    assert publish_mandatory(chan, queue, queue) == []
    _, ready, consumers = chan.queue_declare(queue, passive=True)
    assert (ready, consumers) == (2, 0)  # declared, not consumed yet


def test_queue_with_other_arguments_is_used_as_it_is(
        amqp_brokers: Callable[..., Any], rabbitmq_channel: Callable[..., Any]) -> None:
    queue = "ready-foreign"
    chan = rabbitmq_channel(queues=[queue], exchanges=[queue])
    chan.queue_declare(queue, durable=True, auto_delete=False,
                       arguments={"x-max-length": 1000})
    broker = amqp_brokers()
    broker.declare_consumed([queue])  # no PRECONDITION_FAILED: noted, used as it is
    assert queue in broker._foreign
    broker.publish(task_message("t.x", "after-foreign"), queue)
    got = broker.receive([queue], owner="me", limit=1, timeout=10)
    assert [d.message.task_id for d in got] == ["after-foreign"]
    assert broker.ack(got) == 1
