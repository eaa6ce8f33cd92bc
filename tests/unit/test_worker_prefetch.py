"""The prefetch rule: adaptive by default (expected work within a budget), fixed when
``worker_prefetch_multiplier`` is set explicitly; and a consumer following it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celery
from celeriac.worker.consumer import Consumer
from celeriac.worker.main import Worker
from celeriac.worker.pools import SoloPool, ThreadPool
from celeriac.worker.prefetch import MAX_EXTRA_PER_SLOT, PrefetchRule, explicit_multiplier


def test_nothing_extra_before_a_task_has_finished() -> None:
    assert PrefetchRule(2, budget=0.1).extra() == 0


@pytest.mark.parametrize(("seconds", "extra"), [
    (0.010, 10), (0.020, 5), (0.050, 2), (0.099, 1), (0.100, 0), (0.5, 0), (10.0, 0)])
def test_extra_is_the_budget_over_the_expected_run_time(seconds: float, extra: int) -> None:
    rule = PrefetchRule(1, budget=0.1)
    rule.observe(seconds)
    assert rule.extra() == extra


def test_tiny_tasks_are_capped_per_slot() -> None:
    rule = PrefetchRule(3, budget=0.1)
    rule.observe(0.000001)
    assert rule.extra() == 3 * MAX_EXTRA_PER_SLOT


def test_a_long_run_stops_prefetching_at_once_and_short_runs_bring_it_back() -> None:
    rule = PrefetchRule(1, budget=0.1)
    for _ in range(20):
        rule.observe(0.0001)
    assert rule.extra() == MAX_EXTRA_PER_SLOT
    rule.observe(10.0)  # one long task: nothing extra from now on
    assert rule.extra() == 0
    for _ in range(5):
        rule.observe(0.0001)
    assert rule.extra() == 0  # still expecting long ones after a few short runs
    for _ in range(80):
        rule.observe(0.0001)
    assert rule.extra() == MAX_EXTRA_PER_SLOT


def test_a_task_still_running_counts_as_long_as_it_has_run() -> None:
    rule = PrefetchRule(2, budget=0.1)
    rule.observe(0.0001)
    assert rule.extra(running_for=0.0) == 2 * MAX_EXTRA_PER_SLOT
    assert rule.extra(running_for=0.02) == 5
    assert rule.extra(running_for=3.0) == 0


def test_a_zero_budget_never_prefetches() -> None:
    rule = PrefetchRule(1, budget=0.0)
    rule.observe(0.0001)
    assert rule.extra() == 0
    assert not rule.may_batch


def test_the_fixed_rule_ignores_run_times_and_never_gives_back() -> None:
    rule = PrefetchRule(2, fixed=6)
    rule.observe(100.0)
    assert rule.extra(running_for=100.0) == 6
    assert not rule.stalled(0.0, now=1000.0)
    assert rule.per_child().extra() == 3


def test_the_adaptive_rule_gives_back_after_the_budget() -> None:
    rule = PrefetchRule(1, budget=0.1)
    assert not rule.stalled(10.0, now=10.05)
    assert rule.stalled(10.0, now=10.2)


def test_counters() -> None:
    rule = PrefetchRule(2, budget=0.1)
    rule.asked(2, 2, 1)
    rule.asked(40, 1, 40)
    assert rule.stats() == {"rule": "adaptive", "budget": 0.1, "expected_seconds": None,
                            "lease_requests": 2, "batched_requests": 1,
                            "largest_request": 40, "received": 41, "given_back": 0}


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("prefetch", broker="memory://", backend="memory://")
    yield app
    app.close()


def test_default_settings_mean_adaptive(app: Celery) -> None:
    assert explicit_multiplier(app.conf, None) is None
    rule = Worker(app, concurrency=2, setup_logs=False).prefetch
    assert rule.adaptive and rule.budget == 0.1


@pytest.mark.parametrize("how", ["conf", "update", "old_name", "cli"])
def test_an_explicit_multiplier_wins_even_at_its_default(app: Celery, how: str) -> None:
    option = None
    if how == "conf":
        app.conf.worker_prefetch_multiplier = 1
    elif how == "update":
        app.conf.update(worker_prefetch_multiplier=4)
    elif how == "old_name":
        app.config_from_object({"CELERYD_PREFETCH_MULTIPLIER": 4})
    else:
        option = 4
    rule = Worker(app, concurrency=2, setup_logs=False, prefetch_multiplier=option).prefetch
    assert rule.fixed == (0 if how == "conf" else 6)


def test_disable_prefetch_wins(app: Celery) -> None:
    app.conf.update(worker_disable_prefetch=True, worker_prefetch_multiplier=8)
    rule = Worker(app, concurrency=2, setup_logs=False).prefetch
    assert rule.fixed == 0 and not rule.may_batch


def test_the_budget_setting_is_read(app: Celery) -> None:
    app.conf.worker_prefetch_budget = 0.5
    assert Worker(app, concurrency=1, setup_logs=False).prefetch.budget == 0.5


# -- a consumer following the rule (in this process, memory broker) -----------------------

def _consume(app: Celery, pool: Any, rule: PrefetchRule, until: Any,
             timeout: float = 20.0) -> Consumer:
    consumer = Consumer(app, ["celery"], pool, poll_timeout=0.05, prefetch=rule)
    thread = threading.Thread(target=consumer.run)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not until() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        consumer.stop()
        thread.join(10)
        pool.shutdown()
    return consumer


@pytest.mark.parametrize("pool", [SoloPool, lambda: ThreadPool(2)], ids=["solo", "threads"])
def test_a_drain_of_no_ops_leases_in_batches(app: Celery, pool: Any) -> None:
    @app.task
    def noop() -> None:
        return None

    results = [noop.delay() for _ in range(300)]
    rule = PrefetchRule(2, budget=0.1)
    _consume(app, pool(), rule, lambda: all(r.ready() for r in results))
    assert all(r.ready() for r in results)
    assert rule.batched >= 1 and rule.largest > 2
    assert rule.requests < 300  # fewer lease requests than tasks


@pytest.mark.parametrize("pool", [SoloPool, lambda: ThreadPool(1)], ids=["solo", "threads"])
def test_what_waits_behind_a_slow_task_is_given_back(app: Celery, pool: Any) -> None:
    gate = threading.Event()

    @app.task
    def quick() -> str:
        return "quick"

    @app.task
    def slow() -> str:
        gate.wait(20)
        return "slow"

    warm = [quick.delay() for _ in range(20)]
    long = slow.delay()
    after = [quick.delay() for _ in range(5)]
    rule = PrefetchRule(1, budget=0.05)
    given: dict[str, int] = {}

    def check() -> bool:
        if rule.given_back and not given:
            given["waiting"] = app.broker.stats("celery").ready
            gate.set()
        return long.ready() and all(r.ready() for r in after)

    _consume(app, pool(), rule, check)
    assert all(r.get(timeout=1) == "quick" for r in warm + after)
    assert long.get(timeout=1) == "slow"
    assert rule.given_back >= 1  # leased with the slow task, given back while it ran
    assert given["waiting"] >= 1  # back in the queue, where another worker could take them


# -- at-least-once order: a result is stored before its message is acknowledged ------------

@pytest.mark.parametrize("pool_name", ["solo", "threads", "asyncio"])
def test_results_are_stored_before_acks_on_every_pool(tmp_path: Any, pool_name: str) -> None:
    from celeriac.worker.pools import make_pool

    url = f"sqlite:///{tmp_path}/order.sqlite3"
    app = Celery("order", broker=url, backend=url)
    try:
        @app.task
        def noop(i: int) -> int:
            return i

        @app.task
        def slow() -> str:
            time.sleep(0.4)  # the watcher settles the finished no-ops meanwhile (solo)
            return "slow"

        results = [noop.delay(i) for i in range(60)] + [slow.delay()]
        results += [noop.delay(i) for i in range(60, 120)]
        events: list[tuple[str, str]] = []
        lock = threading.Lock()
        broker, backend = app.broker, app.backend
        assert backend is not None
        real_ack, real_ack_recv = broker.ack, broker.ack_and_receive
        real_set, real_set_many = backend.set, backend.set_many

        def acked(deliveries: Any) -> None:
            with lock:
                events.extend(("ack", d.message.task_id) for d in deliveries)

        def ack(deliveries: Any) -> int:
            acked(deliveries)
            return real_ack(deliveries)

        def ack_and_receive(acks: Any, *args: Any, **kwargs: Any) -> Any:
            acked(acks)
            return real_ack_recv(acks, *args, **kwargs)

        def store(task_id: str, meta: Any, **kwargs: Any) -> bool:
            ok = real_set(task_id, meta, **kwargs)
            with lock:
                events.append(("stored", task_id))
            return ok

        def store_many(items: Any, **kwargs: Any) -> Any:
            items = list(items)
            out = real_set_many(items, **kwargs)
            with lock:
                events.extend(("stored", task_id) for task_id, _ in items)
            return out

        real_settle = broker.settle_and_receive

        def settle_and_receive(store: Any, results: Any, expires: Any, acks: Any,
                               *args: Any, **kwargs: Any) -> Any:
            # SQLite: results, acks and the lease commit in one transaction (results first)
            out = real_settle(store, results, expires, acks, *args, **kwargs)
            with lock:
                events.extend(("stored", task_id) for task_id, _ in results)
                events.extend(("ack", d.message.task_id) for d in acks)
            return out

        broker.ack, broker.ack_and_receive = ack, ack_and_receive  # type: ignore[method-assign]
        broker.settle_and_receive = settle_and_receive  # type: ignore[method-assign]
        backend.set, backend.set_many = store, store_many  # type: ignore[method-assign]
        rule = PrefetchRule(2, budget=0.1)
        _consume(app, make_pool(pool_name, 2), rule,
                 lambda: all(r.ready() for r in results) and app.broker.stats("celery").leased
                 == 0)
        order = {(kind, task_id): n for n, (kind, task_id) in enumerate(events)}
        for r in results:
            assert ("stored", r.id) in order and ("ack", r.id) in order
            assert order["stored", r.id] < order["ack", r.id], r.id
        assert rule.batched >= 1
    finally:
        app.close()


def test_group_commit_returns_once_the_result_is_stored(app: Celery) -> None:
    """Jobs on threads store results by group commit: what arrives during a write goes in
    the next one, and each caller returns only once its own result is stored."""
    from celeriac import states
    from celeriac.results.meta import build_meta
    from celeriac.worker.settle import ResultBatcher

    backend = app.backend
    assert backend is not None
    real = backend.set_many
    writes: list[list[str]] = []
    writing = threading.Event()

    def slow_set_many(items: Any, **kwargs: Any) -> Any:
        items = list(items)
        writes.append([task_id for task_id, _ in items])
        writing.set()
        time.sleep(0.3)
        return real(items, **kwargs)

    backend.set_many = slow_set_many  # type: ignore[method-assign]
    batcher = ResultBatcher(app)
    batcher.add("b", build_meta("b", 2, states.SUCCESS))  # b's own flush comes later
    first = threading.Thread(target=batcher.store, args=("a", build_meta("a", 1, states.SUCCESS)))
    first.start()
    assert writing.wait(5)  # a's write took b along and is still running
    batcher.flush()  # b's flush: returns only once that write has ended
    assert backend.get("b")["result"] == 2  # type: ignore[index]
    batcher.store("c", build_meta("c", 3, states.SUCCESS))
    assert backend.get("c")["result"] == 3  # type: ignore[index]
    first.join(5)
    assert writes == [["b", "a"], ["c"]]
