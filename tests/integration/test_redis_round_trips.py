"""Round trips of a worker loop on Redis, counted at the wire.

Every round trip of celeriac's hot paths is one packed write on a raw connection
(:mod:`celeriac.brokers.redis.direct`); the tests record each write's commands
and the thread that sent it, while an in-process consumer (solo pool) drains
tasks on a real Redis:

* acknowledgements ride in the lease request: whenever the consumer both settles
  and leases, ``ACK`` and ``RECEIVE`` go in one write, never an ``ACK`` alone; with
  batched results (a prefetch), the results, their acknowledgements and the lease
  are one write (``SETTLE`` + ``RECEIVE``);
* a non-SUCCESS state (``store_result``) is one script call, with no read first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celery
from celeriac.brokers.redis import direct
from celeriac.worker.consumer import Consumer
from celeriac.worker.pools import SoloPool
from celeriac.worker.prefetch import PrefetchRule

pytestmark = pytest.mark.redis


@pytest.fixture
def app(redis_url: str, key_prefix: str) -> Iterator[Celery]:
    app = Celery("trips", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": key_prefix}
    app.conf.result_backend_transport_options = {"global_keyprefix": key_prefix}
    yield app
    app.close()


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, list[tuple[Any, ...]]]]:
    """Every packed write: (sending thread, its commands)."""
    sent: list[tuple[int, list[tuple[Any, ...]]]] = []
    lock = threading.Lock()
    real_pack = direct.pack

    def pack(commands: Any) -> bytes:
        with lock:
            sent.append((threading.get_ident(), [tuple(c) for c in commands]))
        return real_pack(commands)

    monkeypatch.setattr(direct, "pack", pack)
    return sent


def drain(app: Celery, until: Any, prefetch: int = 8) -> Consumer:
    consumer = Consumer(app, ["celery"], SoloPool(), poll_timeout=0.05,
                        prefetch=PrefetchRule(1, fixed=prefetch))
    thread = threading.Thread(target=consumer.run)
    thread.start()
    deadline = time.monotonic() + 20
    try:
        while not until() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        consumer.stop()
        thread.join(10)
    return consumer


def shas(app: Celery) -> dict[str, str]:
    scripts = app.broker._connection()[2]  # type: ignore[attr-defined]
    return {scripts[name].sha: name for name in ("ack", "receive", "settle")}


def script_names(commands: list[tuple[Any, ...]], known: dict[str, str]) -> list[str]:
    return [known.get(str(c[1]), "?") for c in commands if c[0] == "EVALSHA"]


@pytest.mark.parametrize("prefetch", [8, 0], ids=["batched-results", "no-prefetch"])
def test_acknowledgements_ride_in_the_lease_request(app: Celery, writes: list[Any],
                                                    prefetch: int) -> None:
    """With a prefetch, results are batched and ride with their acknowledgements and the
    next lease (``SETTLE`` + ``RECEIVE``); without one, each result is stored as its task
    ends and the acknowledgement rides with the lease (``ACK`` + ``RECEIVE``)."""
    @app.task(name="trips.noop")
    def noop(i: int) -> int:
        return i

    results = [noop.delay(i) for i in range(200)]
    known = shas(app)
    turns: list[tuple[int, int, int]] = []  # (acks sent, delivered, writes during the call)
    settles: list[tuple[int, int, int]] = []  # (results, acks, writes) of settle_and_receive
    real, real_settle = app.broker.ack_and_receive, app.broker.settle_and_receive

    def mine(before: int) -> int:  # not the other threads' writes
        me = threading.get_ident()
        return len([w for w in writes[before:] if w[0] == me])

    def ack_and_receive(acks: Any, *args: Any, **kwargs: Any) -> Any:
        before = len(writes)
        done, got = real(acks, *args, **kwargs)
        turns.append((len(acks), len(got), mine(before)))
        return done, got

    def settle_and_receive(store: Any, results: Any, expires: Any, acks: Any, *args: Any,
                           **kwargs: Any) -> Any:
        before = len(writes)
        out = real_settle(store, results, expires, acks, *args, **kwargs)
        settles.append((len(results), len(acks), mine(before)))
        return out

    app.broker.ack_and_receive = ack_and_receive  # type: ignore[method-assign]
    app.broker.settle_and_receive = settle_and_receive  # type: ignore[method-assign]
    writes.clear()
    drain(app, lambda: all(r.ready() for r in results)
          and app.broker.stats("celery").leased == 0, prefetch)
    assert [r.get(timeout=1) for r in results] == list(range(200))
    settling = [t for t in turns if t[0] and t[1]]
    assert all(count == 1 for _, _, count in settling)  # one round trip each
    assert all(count == 1 for _, _, count in settles)
    names = [script_names(commands, known) for _, commands in writes]
    names = [n for n in names if n]
    if prefetch:  # batched results, their acknowledgements and the next lease: one write
        assert any(results and acks for results, acks, _ in settles)
        assert ["settle", "receive"] in names
    else:
        assert settling, "no loop turn settled and leased at once"
        assert ["ack", "receive"] in names
    assert names.count(["ack"]) <= 1  # never an ACK on its own round trip (but the last)


def test_a_failure_is_stored_in_one_write_without_a_read(app: Celery,
                                                         writes: list[Any]) -> None:
    @app.task(name="trips.boom")
    def boom() -> None:
        raise ValueError("boom")

    result = boom.delay()
    key = app.backend.task_key(result.id)  # type: ignore[union-attr]
    writes.clear()
    drain(app, lambda: result.ready())
    assert result.state == "FAILURE"
    main = threading.get_ident()  # this thread polls result.ready(): not the worker's
    touching = [c for thread, commands in writes if thread != main for c in commands
                if any(key == str(a) for a in c)]
    writes_of_key = [c for c in touching if c[0] == "EVALSHA"]
    assert len(writes_of_key) == 1  # the write_metas script, guarded in the same step
    # no read of the key before it: the revocation check of the received batch rode in
    # the lease's RECEIVE (which names the key prefix only), not an MGET of its own
    assert [c[0] for c in touching] == ["EVALSHA"]


def test_an_idle_consumer_waits_right_after_a_lease_that_found_nothing(
        app: Celery, writes: list[Any]) -> None:
    """A lone task's results, acknowledgement and next lease (``SETTLE`` + ``RECEIVE``)
    found nothing: the consumer's next write is the wait with the lease behind it
    (``BLPOP`` + ``RECEIVE``), not another ``RECEIVE`` first."""
    @app.task(name="trips.one")
    def one(i: int) -> int:
        return i

    known = shas(app)
    consumer = Consumer(app, ["celery"], SoloPool(), poll_timeout=0.5,
                        prefetch=PrefetchRule(1, fixed=8))
    thread = threading.Thread(target=consumer.run)
    thread.start()
    try:
        for i in range(5):  # one at a time: each lease after a task finds nothing
            assert one.delay(i).get(timeout=20) == i
            time.sleep(0.1)
    finally:
        consumer.stop()
        thread.join(10)
    mine = [commands for ident, commands in writes if ident == thread.ident]
    after_settle = [mine[i + 1] for i in range(len(mine) - 1)
                    if "settle" in script_names(mine[i], known)]
    assert after_settle, "no lone task was settled with the next lease"
    assert any(commands[0][0] == "BLPOP" for commands in after_settle)
    assert all(commands[0][0] == "BLPOP" or script_names(commands, known) == ["receive"]
               for commands in after_settle)
