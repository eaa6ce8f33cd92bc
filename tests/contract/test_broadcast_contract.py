"""The broadcast channel contract (events and remote control), for every broker.

What ``Broker.broadcast_channel()`` must do (see the docstring of
``celeriac.brokers.base`` and docs/monitoring.md, "For broker authors"):
fan-out to every open subscription whose pattern matches, nothing stored for
later subscribers, AMQP topic patterns, reply mailboxes routed by routing
key, and ``Broker.delayed`` / ``QueueStats.oldest_ready_at``.
"""

from __future__ import annotations

import threading
import time

import pytest

from celeriac.brokers.base import Broadcast, Broker, topic_matches
from celeriac.messages import task_message

from .conftest import make_broker

BROADCAST_BROKERS = ["memory", "sqlite", "redis", "redis-cluster", "postgres", "amqp"]


@pytest.fixture(params=BROADCAST_BROKERS)
def broker(request: pytest.FixtureRequest) -> Broker:
    made = make_broker(request.param, request)
    yield made
    made.close()


def event(key: str, text: str = "x", exchange: str = "celeryev") -> Broadcast:
    return Broadcast(exchange=exchange, routing_key=key, body=text.encode(),
                     headers={"hostname": "w1@h"})


def take(sub, want: int, timeout: float = 5.0) -> list[Broadcast]:  # type: ignore[no-untyped-def]
    got: list[Broadcast] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += sub.get(0.5)
    return got


def test_topic_rules() -> None:
    assert topic_matches("#", "task.multi") and topic_matches("#", "")
    assert topic_matches("worker.#", "worker.heartbeat")
    assert not topic_matches("worker.#", "task.multi")
    assert topic_matches("task.*", "task.sent") and not topic_matches("task.*", "task.a.b")
    assert topic_matches("", "") and not topic_matches("", "task.sent")


def test_fanout_reaches_every_matching_subscription(broker: Broker) -> None:
    channel = broker.broadcast_channel()
    everything = channel.subscribe("celeryev", ["#"])
    workers = channel.subscribe("celeryev", ["worker.#"])
    other = channel.subscribe("elsewhere", ["#"])
    try:
        channel.publish(event("task.multi", "t1"))
        channel.publish(event("worker.heartbeat", "w1"))
        got = take(everything, 2)
        assert [(m.routing_key, m.body) for m in got] == [("task.multi", b"t1"),
                                                          ("worker.heartbeat", b"w1")]
        assert got[0].headers == {"hostname": "w1@h"} and got[0].exchange == "celeryev"
        assert [m.body for m in take(workers, 1)] == [b"w1"]
        assert other.get(0.3) == []
        assert workers.get(0.3) == []
    finally:
        for sub in (everything, workers, other):
            sub.close()


def test_nothing_is_kept_for_later_subscribers(broker: Broker) -> None:
    channel = broker.broadcast_channel()
    channel.publish(event("worker.online", "early"))
    late = channel.subscribe("celeryev", ["#"])
    try:
        channel.publish(event("worker.online", "late"))
        assert [m.body for m in take(late, 1)] == [b"late"]
        assert late.get(0.3) == []
    finally:
        late.close()


def test_pidbox_requests_use_an_empty_routing_key(broker: Broker) -> None:
    channel = broker.broadcast_channel()
    mailbox = channel.subscribe("celery.pidbox", [""])
    try:
        request = Broadcast(exchange="celery.pidbox", routing_key="", body=b'{"method":"ping"}',
                            headers={"clock": 1, "expires": time.time() + 5}, persistent=True)
        channel.publish(request)
        got = take(mailbox, 1)
        assert len(got) == 1 and got[0].body == request.body and got[0].persistent
        assert got[0].headers["clock"] == 1
    finally:
        mailbox.close()


def test_subscription_wakes_on_publish_from_another_thread(broker: Broker) -> None:
    channel = broker.broadcast_channel()
    sub = channel.subscribe("celeryev", ["#"])
    try:
        timer = threading.Timer(0.3, lambda: channel.publish(event("task.sent", "later")))
        timer.start()
        got = take(sub, 1, timeout=5.0)
        timer.join()
        assert [m.body for m in got] == [b"later"]
    finally:
        sub.close()


def test_mailboxes_are_routed_by_routing_key(broker: Broker) -> None:
    channel = broker.broadcast_channel()
    reply = Broadcast(exchange="reply.celery.pidbox", routing_key="oid-1",
                      body=b'{"w1@h": {"ok": "pong"}}', headers={"ticket": "t1", "clock": 3})
    assert channel.send_to_mailbox(reply) is False  # nobody listens: dropped
    mine = channel.open_mailbox("reply.celery.pidbox", "oid-1")
    theirs = channel.open_mailbox("reply.celery.pidbox", "oid-2")
    try:
        assert channel.send_to_mailbox(reply) is True
        got = take(mine, 1)
        assert [(m.body, m.headers["ticket"]) for m in got] == [(reply.body, "t1")]
        assert theirs.get(0.3) == []
    finally:
        mine.close()
        theirs.close()
    assert channel.send_to_mailbox(reply) is False  # closed: gone with its binding


def test_delayed_lists_waiting_messages_soonest_first(broker: Broker) -> None:
    if not broker.capabilities.counts_delayed:  # RabbitMQ: the shared delay layout
        broker.publish(task_message("t.late", task_id="late"), "q", not_before=time.time() + 60)
        assert broker.delayed("q") == []
        return
    now = time.time()
    late = task_message("t.late", task_id="late")
    soon = task_message("t.soon", task_id="soon")
    broker.publish(late, "q", not_before=now + 120)
    broker.publish(soon, "q", not_before=now + 60)
    broker.publish(task_message("t.now", task_id="now"), "q")
    listed = broker.delayed("q")
    assert [m.task_id for _, m in listed] == ["soon", "late"]
    assert abs(listed[0][0] - (now + 60)) < 1.0


def test_stats_tell_since_when_the_oldest_ready_message_waits(broker: Broker) -> None:
    assert broker.stats("q").oldest_ready_at is None
    before = time.time()
    broker.publish(task_message("t.a", task_id="a"), "q")
    time.sleep(0.05)
    broker.publish(task_message("t.b", task_id="b"), "q")
    oldest = broker.stats("q").oldest_ready_at
    got = broker.receive(["q"], owner="w", limit=2, timeout=1.0)
    if not broker.capabilities.ready_times:  # Redis: kombu's envelope carries no time
        assert oldest is None and got[0].published_at is None
        return
    assert oldest is not None and before - 1.0 <= oldest <= time.time()
    assert got and got[0].published_at is not None
    assert broker.stats("q").oldest_ready_at is None  # both leased
