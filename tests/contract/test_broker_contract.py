"""The broker contract (celeriac.brokers.base docstring), checked on every broker.

Brokers come from the ``broker`` fixture in conftest.py (lease_seconds=1.0).
Priorities used here are 0/3/6/9 so brokers with Celery-on-Redis priority
steps order them exactly too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import pytest

from celeriac.brokers.base import DECODE_ERROR, REJECTED, WORKER_LOST, Broker, Delivery, Publish
from celeriac.exceptions import MessageTooLarge
from celeriac.message_size import ENVELOPE_GROWTH, check_size, message_size
from celeriac.messages import Message, task_message

LEASE = 1.0
Q, Q2 = "contract-q", "contract-q2"


def make_message(n: int, *, priority: int | None = None, queue: str = Q) -> Message:
    """A full Celery 5.7 task message whose task id is ``task-<n>``."""
    return task_message("tests.add", f"task-{n}", (n, 1), {"n": n}, priority=priority,
                        queue=queue, headers={"x-trace": [n, "é", None]})


def ids(deliveries: Sequence[Delivery]) -> list[str]:
    return [str(d.message.task_id) for d in deliveries]


def drain(broker: Broker, queues: Sequence[str], owner: str = "w1", *, limit: int = 50,
          expect: int, timeout: float = 5.0) -> list[Delivery]:
    """Receive until ``expect`` deliveries arrived or ``timeout`` passed."""
    out: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(out) < expect and time.monotonic() < deadline:
        out.extend(broker.receive(queues, owner=owner, limit=limit, timeout=0.2))
    return out


def later(delay: float, action: Callable[[], object]) -> tuple[threading.Thread, list[float]]:
    """Run ``action`` in a thread after ``delay``; the list gets the monotonic time it ran."""
    done: list[float] = []

    def run() -> None:
        time.sleep(delay)
        action()
        done.append(time.monotonic())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done


def timed_leases(broker: Broker) -> None:
    """Skip on brokers whose leases last while the holder's connection lives (RabbitMQ:
    ``lease_renewal=False``); their lapse is tested by dropping that connection in the
    broker's own integration tests (tests/integration/test_amqp_broker.py)."""
    if not broker.capabilities.lease_renewal:
        pytest.skip(f"{type(broker).__name__}: leases are not timed, they end with the "
                    "connection that holds them")


def delayed(broker: Broker, n: int) -> int:
    """``n``, or 0 where delayed messages wait outside their queue in a layout shared by
    all queues (RabbitMQ: ``counts_delayed=False``), so a queue's stats cannot count them
    and its purge cannot reach them."""
    return n if broker.capabilities.counts_delayed else 0


def counts(broker: Broker, queue: str = Q) -> tuple[int, int, int, int]:
    s = broker.stats(queue)
    return s.ready, s.delayed, s.leased, s.dead


# -- publish / receive -------------------------------------------------------------
def test_round_trip_keeps_headers_properties_and_body(broker: Broker) -> None:
    message = make_message(1, priority=3)
    before = time.time()
    broker.publish(message, Q)
    [d] = broker.receive([Q], owner="w1", limit=10, timeout=2)
    assert d.message.headers == message.headers
    assert d.message.properties == message.properties
    assert d.message.body == message.body
    assert (d.message.content_type, d.message.content_encoding) == (
        message.content_type, message.content_encoding)
    assert (d.queue, d.owner, d.redelivered, d.delivery_count, d.lost_count) == (
        Q, "w1", False, 1, 0)
    assert d.token and d.tag
    assert before + LEASE - 0.5 < d.lease_expires < time.time() + LEASE + 0.5


def test_hand_made_message_with_binary_body(broker: Broker) -> None:
    message = Message({"task": "tests.raw", "id": "raw-1"}, {}, b"\x00\xff\xfe binary",
                      "application/x-custom", "binary")
    broker.publish(message, Q)
    [d] = broker.receive([Q], owner="w1", timeout=2)
    assert d.message.headers == message.headers
    assert d.message.body == message.body
    assert d.message.content_type == "application/x-custom"
    assert d.message.priority == 0


def test_envelope_size_bounds_the_size_check(broker: Broker) -> None:
    """``envelope_size`` (None where the broker does not read a JSON envelope whole)
    bounds the message's measure, so the worker's size check stays exact: a message
    over ``task_message_max_size`` is refused either way."""
    big = task_message("tests.add", "big-1", ("é" * 40_000,), {}, queue=Q)
    for message in (make_message(1), big):
        broker.publish(message, Q)
        [d] = broker.receive([Q], owner="w1", timeout=2)
        broker.ack([d])
        if d.envelope_size is not None:
            assert message_size(d.message) <= ENVELOPE_GROWTH * d.envelope_size
        check_size(d.message, 2_000_000, envelope=d.envelope_size)
    with pytest.raises(MessageTooLarge):
        check_size(d.message, 100_000, envelope=d.envelope_size)


def test_fifo_within_a_priority(broker: Broker) -> None:
    for n in range(30):
        broker.publish(make_message(n), Q)
    got = drain(broker, [Q], limit=7, expect=30)
    assert ids(got) == [f"task-{n}" for n in range(30)]


def test_priority_zero_first_then_publish_order(broker: Broker) -> None:
    plan: list[tuple[int, int | None, int | None]] = [  # (n, message priority, publish arg)
        (0, None, 9), (1, None, 0), (2, None, 6), (3, 6, None), (4, None, 3),
        (5, None, 12), (6, 0, -4), (7, 9, 0),
    ]
    for n, own, arg in plan:
        broker.publish(make_message(n, priority=own), Q, priority=arg)
    got = drain(broker, [Q], limit=3, expect=len(plan))
    assert ids(got) == [f"task-{n}" for n in (1, 6, 7, 4, 2, 3, 0, 5)]
    assert [d.message.priority for d in got] == [0, 0, 0, 3, 6, 6, 9, 9]


def test_not_before_hides_message_until_due(broker: Broker) -> None:
    due = time.time() + 1.5
    broker.publish(make_message(1), Q, not_before=due)
    broker.publish(make_message(2), Q, not_before=time.time() - 5)
    ready = broker.receive([Q], owner="w1", limit=5, timeout=0)
    assert ids(ready) == ["task-2"]
    assert counts(broker)[:2] == (0, delayed(broker, 1))
    broker.ack(ready)  # (the suite's leases are short: it would come back meanwhile)
    got = broker.receive([Q], owner="w1", limit=5, timeout=4)
    assert ids(got) == ["task-1"]
    # measured from when it is due, not from the receive: a loaded machine may take
    # a good part of the 1.5 s to publish and count
    assert due - 0.05 < time.time() < due + 2.5


def test_limit_caps_a_batch(broker: Broker) -> None:
    for n in range(5):
        broker.publish(make_message(n), Q)
    assert len(broker.receive([Q], owner="w1", limit=3, timeout=1)) == 3
    assert len(broker.receive([Q], owner="w1", limit=10, timeout=0)) == 2


def test_empty_receive_waits_for_timeout(broker: Broker) -> None:
    start = time.monotonic()
    assert broker.receive([Q], owner="w1", limit=5, timeout=0.4) == []
    assert 0.3 <= time.monotonic() - start < 2.0
    start = time.monotonic()
    assert broker.receive([Q], owner="w1", limit=5, timeout=0) == []
    assert time.monotonic() - start < 0.5


def test_blocked_receive_wakes_on_publish_from_another_thread(broker: Broker) -> None:
    thread, published = later(0.3, lambda: broker.publish(make_message(1), Q))
    got = broker.receive([Q], owner="w1", limit=5, timeout=5)
    woke = time.monotonic()
    thread.join()
    assert ids(got) == ["task-1"]
    assert woke - published[0] < 0.5


def test_blocked_receive_sees_delayed_message_published_meanwhile(broker: Broker) -> None:
    thread, _ = later(0.1, lambda: broker.publish(make_message(1), Q,
                                                  not_before=time.time() + 0.4))
    start = time.monotonic()
    got = broker.receive([Q], owner="w1", limit=5, timeout=5)
    thread.join()
    assert ids(got) == ["task-1"]
    assert 0.35 < time.monotonic() - start < 1.5


# -- leases -----------------------------------------------------------------------
def test_leased_messages_are_invisible_to_other_owners(broker: Broker) -> None:
    for n in range(10):
        broker.publish(make_message(n), Q)
    assert len(broker.receive([Q], owner="a", limit=10, timeout=1)) == 10
    assert broker.receive([Q], owner="b", limit=10, timeout=0.2) == []
    assert counts(broker) == (0, 0, 10, 0)


def test_ack_removes_for_good(broker: Broker) -> None:
    for n in range(3):
        broker.publish(make_message(n), Q)
    got = broker.receive([Q], owner="w1", limit=3, timeout=1)
    assert broker.ack(got) == 3
    assert broker.ack(got) == 0
    assert broker.ack([]) == 0
    assert counts(broker) == (0, 0, 0, 0)
    time.sleep(LEASE + 0.3)
    assert broker.receive([Q], owner="w2", limit=3, timeout=0) == []


def test_lapsed_lease_is_redelivered_and_fenced(broker: Broker) -> None:
    timed_leases(broker)
    broker.publish(make_message(1), Q)
    [a] = broker.receive([Q], owner="a", timeout=1)
    time.sleep(LEASE + 0.3)
    [b] = broker.receive([Q], owner="b", timeout=2)
    assert (b.message.task_id, b.redelivered, b.delivery_count, b.lost_count) == (
        "task-1", True, 2, 1)
    assert b.token != a.token
    assert broker.ack([a]) == 0
    assert broker.renew([a]) == [False]
    assert broker.release(a) is False
    assert broker.dead_letter(a, REJECTED) is False
    assert counts(broker) == (0, 0, 1, 0)
    assert broker.ack([b]) == 1


def test_renew_keeps_lease_past_lease_seconds(broker: Broker) -> None:
    timed_leases(broker)
    broker.publish(make_message(1), Q)
    [d] = broker.receive([Q], owner="a", timeout=1)
    for _ in range(4):
        time.sleep(0.4)
        assert broker.renew([d]) == [True]
    assert broker.receive([Q], owner="b", timeout=0) == []
    assert counts(broker)[2] == 1
    assert broker.renew([d], seconds=0.3) == [True]
    [b] = broker.receive([Q], owner="b", timeout=2)
    assert b.lost_count == 1
    assert broker.renew([d, b]) == [False, True]
    assert broker.renew([]) == []


def test_release_gives_back_without_counting_a_loss(broker: Broker) -> None:
    broker.publish(make_message(1), Q)
    [a] = broker.receive([Q], owner="a", timeout=1)
    assert broker.release(a) is True
    assert broker.release(a) is False
    assert counts(broker)[:3] == (1, 0, 0)
    [b] = broker.receive([Q], owner="b", timeout=1)
    assert (b.delivery_count, b.lost_count, b.redelivered) == (2, 0, True)
    assert broker.ack([a]) == 0


def test_failed_release_counts_a_lost_delivery(broker: Broker) -> None:
    """A give-back that is not a deliberate requeue counts, so no message can loop."""
    broker.publish(make_message(1), Q)
    [a] = broker.receive([Q], owner="a", timeout=1)
    assert broker.release(a, failed=True) is True
    assert broker.release(a, failed=True) is False
    [b] = broker.receive([Q], owner="b", timeout=1)
    assert (b.delivery_count, b.lost_count, b.redelivered) == (2, 1, True)
    assert broker.release(b, failed=True) is True
    [c] = broker.receive([Q], owner="c", timeout=1)
    assert (c.delivery_count, c.lost_count) == (3, 2)
    assert broker.ack([c]) == 1


def test_release_with_delay(broker: Broker) -> None:
    broker.publish(make_message(1), Q)
    [a] = broker.receive([Q], owner="a", timeout=1)
    assert broker.release(a, not_before=time.time() + 0.5) is True
    assert broker.receive([Q], owner="b", timeout=0) == []
    assert counts(broker)[:3] == (0, delayed(broker, 1), 0)
    start = time.monotonic()
    [b] = broker.receive([Q], owner="b", timeout=3)
    assert time.monotonic() - start > 0.3
    assert (b.delivery_count, b.lost_count) == (2, 0)


def test_expire_owner_lapses_only_that_owners_leases(broker: Broker) -> None:
    for n in range(4):
        broker.publish(make_message(n), Q)
    mine = broker.receive([Q], owner="a", limit=3, timeout=1)
    [other] = broker.receive([Q], owner="c", limit=3, timeout=1)
    assert broker.expire_owner("a") == 3
    assert broker.expire_owner("a") == 0
    assert broker.expire_owner("nobody") == 0
    again = drain(broker, [Q], owner="b", limit=10, expect=3, timeout=2)
    assert sorted(ids(again)) == sorted(ids(mine))
    assert all(d.lost_count == 1 and d.redelivered for d in again)
    assert broker.ack(mine) == 0
    assert broker.ack([other]) == 1


# -- dead letters ------------------------------------------------------------------
def test_dead_letter_list_retry_and_purge(broker: Broker) -> None:
    first, second = make_message(1), make_message(2, queue=Q2)
    broker.publish(first, Q)
    broker.publish(second, Q2)
    [d1] = broker.receive([Q], owner="a", timeout=1)
    [d2] = broker.receive([Q2], owner="a", timeout=1)
    before = time.time()
    assert broker.dead_letter(d1, REJECTED) is True
    assert broker.dead_letter(d2, DECODE_ERROR) is True
    assert broker.dead_letter(d1, REJECTED) is False
    assert broker.ack([d1]) == 0
    assert counts(broker) == (0, 0, 0, 1)
    letters = broker.dead_letters()
    assert [(x.queue, x.reason, x.message.task_id) for x in letters] == [
        (Q, REJECTED, "task-1"), (Q2, DECODE_ERROR, "task-2")]
    assert letters[0].message.headers == first.headers
    assert letters[0].message.body == first.body
    assert (letters[0].delivery_count, letters[0].lost_count) == (1, 0)
    assert letters[0].first_delivered_at is not None
    assert before - 1 <= letters[0].dead_at <= time.time() + 1
    assert [x.message.task_id for x in broker.dead_letters(Q2)] == ["task-2"]
    assert len(broker.dead_letters(limit=1)) == 1
    assert broker.retry_dead_letter(letters[0].id) is True
    assert broker.retry_dead_letter(letters[0].id) is False
    assert broker.retry_dead_letter("999999999") is False
    [again] = broker.receive([Q], owner="b", timeout=1)
    assert again.message.headers == first.headers
    assert (again.delivery_count, again.lost_count, again.redelivered) == (1, 0, False)
    assert broker.purge_dead_letters(Q) == 0
    assert broker.purge_dead_letters() == 1
    assert broker.dead_letters() == []


def test_dead_letter_keeps_delivery_counts(broker: Broker) -> None:
    broker.publish(make_message(1), Q)
    broker.receive([Q], owner="a", timeout=1)
    broker.expire_owner("a")
    [d] = broker.receive([Q], owner="b", timeout=1)
    assert broker.dead_letter(d, WORKER_LOST) is True
    [letter] = broker.dead_letters(Q)
    assert (letter.reason, letter.delivery_count, letter.lost_count) == (WORKER_LOST, 2, 1)
    assert broker.purge_dead_letters(Q) == 1


def test_dead_letter_message_stores_a_message_never_leased(broker: Broker) -> None:
    message = make_message(7, priority=3)
    before = time.time()
    dead_id = broker.dead_letter_message(message, Q2, "followup_failed: chain step")
    assert counts(broker, Q2) == (0, 0, 0, 1)
    [letter] = broker.dead_letters(Q2)
    assert letter.id == dead_id
    assert (letter.queue, letter.reason) == (Q2, "followup_failed: chain step")
    assert letter.message.headers == message.headers and letter.message.body == message.body
    assert (letter.delivery_count, letter.lost_count, letter.first_delivered_at) == (0, 0, None)
    assert before - 1 <= letter.dead_at <= time.time() + 1
    assert broker.retry_dead_letter(dead_id) is True
    [again] = broker.receive([Q2], owner="a", timeout=1)
    assert again.message.task_id == "task-7" and again.message.body == message.body
    assert broker.ack([again]) == 1


def test_malformed_fields_do_not_break_publish_or_receive(broker: Broker) -> None:
    """Brokers store and deliver any message; validating fields is the worker's job."""
    bad = [make_message(1).with_properties(priority="high"),
           make_message(2).with_properties(delivery_info="x"),
           make_message(3).with_properties(delivery_info=["x"], priority=[1])]
    for message in bad:
        broker.publish(message, Q)
    got = drain(broker, [Q], owner="a", expect=3)
    assert sorted(ids(got)) == ["task-1", "task-2", "task-3"]
    props = {d.message.task_id: d.message.properties for d in got}
    assert props["task-1"]["priority"] == "high"
    assert props["task-2"]["delivery_info"] == "x"
    for d in got:
        assert broker.release(d, failed=True) is True
    again = drain(broker, [Q], owner="b", expect=3)
    assert sorted(ids(again)) == ["task-1", "task-2", "task-3"]
    assert all(d.redelivered and d.lost_count == 1 for d in again)
    assert broker.dead_letter(again[0], DECODE_ERROR) is True
    assert broker.ack(again[1:]) == 2


# -- admin --------------------------------------------------------------------------
def test_purge_deletes_ready_and_delayed_but_not_leased(broker: Broker) -> None:
    broker.publish(make_message(0), Q)
    [held] = broker.receive([Q], owner="a", timeout=1)
    for n in range(1, 4):
        broker.publish(make_message(n), Q)
    broker.publish(make_message(4), Q, not_before=time.time() + 60)
    broker.publish(make_message(5, queue=Q2), Q2)
    assert broker.purge(Q) == 3 + delayed(broker, 1)
    assert counts(broker)[:3] == (0, 0, 1)
    assert ids(broker.receive([Q2], owner="a", timeout=1)) == ["task-5"]
    assert broker.ack([held]) == 1


def test_stats_count_each_state(broker: Broker) -> None:
    for n in range(3):
        broker.publish(make_message(n), Q)
    broker.publish(make_message(3), Q, not_before=time.time() + 60)
    [d] = broker.receive([Q], owner="a", timeout=1)
    assert counts(broker) == (2, delayed(broker, 1), 1, 0)
    broker.dead_letter(d, REJECTED)
    assert counts(broker) == (2, delayed(broker, 1), 0, 1)
    assert broker.stats(Q).queue == Q
    assert counts(broker, "contract-never-used") == (0, 0, 0, 0)


def test_queues_lists_queues_that_held_messages(broker: Broker) -> None:
    broker.publish(make_message(1), Q)
    broker.publish(make_message(2, queue=Q2), Q2)
    broker.ack(drain(broker, [Q, Q2], expect=2))
    assert {Q, Q2} <= set(broker.queues())


def test_publish_many(broker: Broker) -> None:
    items = [Publish(make_message(n), Q, priority=3) if n % 2 else Publish(make_message(n), Q2)
             for n in range(40)]
    items.append(Publish(make_message(99), Q, priority=0, not_before=time.time() + 60))
    items.append(Publish(make_message(98), Q, priority=0))
    broker.publish_many(items)
    broker.publish_many([])
    assert counts(broker)[:2] == (21, delayed(broker, 1))
    got = drain(broker, [Q], limit=50, expect=21)
    assert ids(got) == ["task-98"] + [f"task-{n}" for n in range(1, 40, 2)]
    assert ids(drain(broker, [Q2], expect=20)) == [f"task-{n}" for n in range(0, 40, 2)]


def test_one_receive_serves_several_queues(broker: Broker) -> None:
    plan = [(0, Q, 6), (1, Q2, 0), (2, Q, 0), (3, Q2, 6), (4, Q, 6), (5, Q2, 0)]
    for n, queue, prio in plan:
        broker.publish(make_message(n, queue=queue), queue, priority=prio)
    got = drain(broker, [Q, Q2], limit=10, expect=6)
    assert [d.message.priority for d in got] == [0, 0, 0, 6, 6, 6]
    for queue in (Q, Q2):
        mine = [d for d in got if d.queue == queue]
        assert ids(mine) == [f"task-{n}" for n, q, _ in sorted(plan, key=lambda p: p[2])
                             if q == queue]


def test_concurrent_consumers_lose_and_duplicate_nothing(broker: Broker) -> None:
    total = 400
    broker.publish_many(Publish(make_message(n), Q) for n in range(total // 2))
    seen: list[str] = []
    acked: list[int] = []
    lock = threading.Lock()

    def consume(owner: str) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with lock:
                if len(seen) >= total:
                    return
            got = broker.receive([Q], owner=owner, limit=7, timeout=0.2)
            count = broker.ack(got)
            with lock:
                seen.extend(ids(got))
                acked.append(count)

    def produce() -> None:
        for n in range(total // 2, total):
            broker.publish(make_message(n), Q)

    threads = [threading.Thread(target=consume, args=(f"w{i}",)) for i in range(4)]
    threads.append(threading.Thread(target=produce))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == total
    assert sorted(seen) == sorted(f"task-{n}" for n in range(total))
    assert sum(acked) == total
    assert counts(broker) == (0, 0, 0, 0)


def test_ack_and_receive_settles_then_leases(broker: Broker) -> None:
    for n in range(3):
        broker.publish(make_message(n), Q)
    first = broker.receive([Q], owner="w1", limit=2, timeout=1)
    done, more = broker.ack_and_receive(first, [Q], owner="w1", limit=5, timeout=1)
    assert done == 2
    assert ids(more) == ["task-2"]
    assert broker.stats(Q).leased == 1
    # a stale ack (lease already given back and taken by another owner) is refused
    broker.release(more[0])
    taken = broker.receive([Q], owner="w2", limit=1, timeout=1)
    done, nothing = broker.ack_and_receive(more, [Q], owner="w1", limit=1, timeout=0.05)
    assert done == 0 and nothing == []
    assert broker.ack(taken) == 1
