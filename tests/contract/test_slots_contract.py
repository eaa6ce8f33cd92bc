"""The slot and unique-claim contract (``Broker.acquire_slot``/``claim_unique``), on every
broker: slots are held only while the holder's lease lives."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from celeriac.brokers.base import Broker, Delivery
from celeriac.brokers.slotting import SlotMethods
from celeriac.exceptions import ImproperlyConfigured
from celeriac.messages import Message, task_message

Q = "slots-q"
LEASE = 1.0


@pytest.fixture(autouse=True)
def slots_supported(broker: Broker) -> Iterator[None]:
    """A broker without slots (amqp:// for now, see docs/rabbitmq.md) refuses loudly."""
    if type(broker).acquire_slot is SlotMethods.acquire_slot:
        with pytest.raises(ImproperlyConfigured, match="concurrency limits"):
            broker.acquire_slot("s", 1, leased(broker, 1)[0])
        with pytest.raises(ImproperlyConfigured, match="unique tasks"):
            broker.claim_unique("k", "v", 1.0)
        pytest.skip(f"{type(broker).__name__} has no slots: refused as checked above")
    yield


def make_message(n: int, *, queue: str = Q) -> Message:
    return task_message("tests.add", f"slot-{n}", (n, 1), {}, queue=queue)


def drain(broker: Broker, queues: list[str], owner: str = "w1", *, expect: int,
          timeout: float = 5.0) -> list[Delivery]:
    out: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(out) < expect and time.monotonic() < deadline:
        out.extend(broker.receive(queues, owner=owner, limit=expect - len(out), timeout=0.2))
    return out


def leased(broker: Broker, count: int, owner: str = "w1") -> list[Delivery]:
    for n in range(count):
        broker.publish(make_message(n, queue=Q), Q)
    got = drain(broker, [Q], owner, expect=count)
    assert len(got) == count
    return got


def test_a_slot_admits_up_to_its_limit(broker: Broker) -> None:
    a, b, c = leased(broker, 3)
    assert broker.acquire_slot("s", 2, a) is True
    assert broker.acquire_slot("s", 2, b) is True
    assert broker.acquire_slot("s", 2, c) is False
    assert broker.acquire_slot("s", 2, a) is True  # idempotent for a holder
    assert broker.acquire_slot("other", 1, c) is True  # names are independent
    holders = broker.slot_holders("s")
    assert sorted(h.task_id or "" for h in holders) == sorted(
        [a.message.task_id or "", b.message.task_id or ""])
    assert {h.owner for h in holders} == {"w1"}
    assert all(h.lease_expires and h.lease_expires > time.time() for h in holders)
    assert {h.name for h in broker.slot_holders()} == {"s", "other"}


def test_release_and_ack_free_the_place(broker: Broker) -> None:
    a, b, c = leased(broker, 3)
    assert broker.acquire_slot("s", 1, a)
    assert not broker.acquire_slot("s", 1, b)
    assert broker.release_slot("s", a) is True
    assert broker.release_slot("s", a) is False
    assert broker.acquire_slot("s", 1, b)
    broker.ack([b])  # acknowledged: the holder is gone
    assert broker.acquire_slot("s", 1, c)
    assert [h.task_id for h in broker.slot_holders("s")] == [c.message.task_id]


def test_released_message_frees_its_place(broker: Broker) -> None:
    a, b = leased(broker, 2)
    assert broker.acquire_slot("s", 1, a)
    assert broker.release(a)
    assert broker.acquire_slot("s", 1, b)


def test_a_lapsed_lease_frees_the_place_and_renewal_keeps_it(broker: Broker) -> None:
    a, b = leased(broker, 2)
    assert broker.acquire_slot("s", 1, a)
    deadline = time.monotonic() + 2.5 * LEASE
    while time.monotonic() < deadline:  # renewed: still held past the first lease
        broker.renew([a, b])
        assert not broker.acquire_slot("s", 1, b)
        time.sleep(0.2)
    time.sleep(LEASE + 0.3)  # a stops renewing (killed): its lease lapses
    broker.renew([b])
    assert broker.acquire_slot("s", 1, b)
    assert [h.task_id for h in broker.slot_holders("s")] == [b.message.task_id]


def test_expire_owner_frees_its_slots(broker: Broker) -> None:
    [a] = leased(broker, 1, owner="dead")
    broker.publish(make_message(9, queue=Q), Q)
    [b] = drain(broker, [Q], "alive", expect=1)
    assert broker.acquire_slot("s", 1, a)
    assert not broker.acquire_slot("s", 1, b)
    broker.expire_owner("dead")
    assert broker.acquire_slot("s", 1, b)


def test_a_delivery_whose_lease_is_gone_cannot_acquire(broker: Broker) -> None:
    a, b = leased(broker, 2)
    broker.ack([a])
    assert broker.acquire_slot("s", 1, a) is False
    assert broker.acquire_slot("s", 1, b) is True


def test_concurrent_acquirers_never_exceed_the_limit(broker: Broker) -> None:
    got = leased(broker, 8)
    won: list[Delivery] = []
    barrier = threading.Barrier(len(got))

    def take(d: Delivery) -> None:
        barrier.wait()
        if broker.acquire_slot("race", 3, d):
            won.append(d)

    threads = [threading.Thread(target=take, args=(d,)) for d in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(won) == 3
    assert len(broker.slot_holders("race")) == 3


def test_unique_claims(broker: Broker) -> None:
    assert broker.claim_unique("k", "first", 1.0) is None
    assert broker.claim_unique("k", "second", 1.0) == "first"
    assert broker.claim_unique("other", "x", 1.0) is None
    assert broker.release_unique("k", "second") is False
    assert broker.release_unique("k", "first") is True
    assert broker.claim_unique("k", "third", 0.5) is None
    time.sleep(0.8)  # the window passed
    assert broker.claim_unique("k", "fourth", 5.0) is None
    assert broker.claim_unique("k", "fifth", 5.0) == "fourth"


def test_concurrent_unique_claims_have_one_winner(broker: Broker) -> None:
    results: list[str | None] = []
    barrier = threading.Barrier(6)

    def claim(n: int) -> None:
        barrier.wait()
        results.append(broker.claim_unique("race", f"v{n}", 10.0))

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    winners = [r for r in results if r is None]
    assert len(winners) == 1
    assert len({r for r in results if r is not None}) == 1
