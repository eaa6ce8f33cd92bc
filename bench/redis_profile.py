"""Where celeriac's time goes on Redis: profiles behind the proposals in bench/RESULTS.md.

Parts (all by default; Redis db 12, a unique key prefix, deleted afterwards):

* ``delay``: µs per ``noop.delay()`` on the memory broker (the core's own
  cost) and on Redis, then a cProfile of 5,000 Redis ``delay()`` calls;
* ``drain``: a cProfile of one in-process :class:`~celeriac.worker.consumer.
  Consumer` (solo pool, prefetch 63) draining 5,000 no-op tasks with results;
* ``ceiling``: what the broker and result store can do for a worker loop,
  with no task execution in between, that settles each message alone
  (``set`` + ``ack`` each), batches only the acks (``set`` each, one ``ack``
  per receive batch), batches both (``set_many`` + one ``ack``), or settles a batch
  and leases the next in one round trip (``settle_and_receive``: the worker's shape
  with batched results).

Usage::

    .venv/bin/python bench/redis_profile.py [delay|drain|ceiling ...]
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import threading
import time
import uuid
from typing import Any

import redis

from celeriac import Celery
from celeriac.app.publish import build_message
from celeriac.app.request import parse_request
from celeriac.brokers.base import Publish
from celeriac.results.meta import build_meta
from celeriac.worker.consumer import Consumer
from celeriac.worker.pools import SoloPool

URL = "redis://127.0.0.1:6379/12"
N = 5000


def make_app(broker: str = URL) -> tuple[Celery, Any, str]:
    prefix = f"bench-profile-{uuid.uuid4().hex[:8]}:"
    app = Celery("profile", broker=broker, backend=None if broker == "memory://" else URL)
    app.conf.broker_transport_options = {"global_keyprefix": prefix}
    app.conf.result_backend_transport_options = {"global_keyprefix": prefix}

    @app.task(name="bench.noop")
    def noop() -> None:
        return None

    app.finalize()
    return app, noop, prefix


def clean(prefix: str) -> None:
    raw = redis.Redis.from_url(URL)
    keys = list(raw.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        raw.delete(*keys)


def fill(app: Celery, count: int) -> None:
    items = []
    for _ in range(count):
        message, queue, not_before, priority = build_message(
            app, "bench.noop", [], {}, str(uuid.uuid4()), {})
        items.append(Publish(message, queue, not_before, priority))
    app.broker.publish_many(items)


def show(profile: cProfile.Profile, title: str, restrict: str | None = None) -> None:
    print(f"\n--- {title}: top functions by own time ---")
    stats = pstats.Stats(profile).sort_stats("tottime")
    if restrict:
        stats.print_stats(restrict, 20)
    else:
        stats.strip_dirs().sort_stats("tottime").print_stats(20)


def part_delay() -> None:
    for broker in ("memory://", URL):
        _app, noop, prefix = make_app(broker)
        noop.delay()
        started = time.perf_counter()
        for _ in range(N):
            noop.delay()
        spent = time.perf_counter() - started
        print(f"delay() on {broker}: {spent / N * 1e6:.0f} µs per call ({N / spent:,.0f}/s)")
        if broker == URL:
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(N):
                noop.delay()
            profile.disable()
            show(profile, "delay() on Redis")
            clean(prefix)


def part_drain() -> None:
    app, _, prefix = make_app()
    fill(app, N)
    consumer = Consumer(app, ["celery"], SoloPool(), prefetch=63)
    raw = redis.Redis.from_url(URL)

    def watch() -> None:
        while raw.llen(f"{prefix}celery") or raw.zcard(f"{prefix}_celeriac.leases.celery"):
            time.sleep(0.005)
        consumer.stop()

    threading.Thread(target=watch, daemon=True).start()
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    consumer.run()
    profile.disable()
    spent = time.perf_counter() - started
    print(f"\nin-process consumer (solo, under cProfile): {N / spent:,.0f} tasks/s")
    show(profile, "consumer draining, celeriac functions", "src/celeriac")
    show(profile, "consumer draining, everything")
    clean(prefix)


def part_ceiling() -> None:
    for mode in ("each alone", "acks batched", "both batched", "one trip") * 2:
        app, _, prefix = make_app()
        fill(app, N)
        broker, store = app.broker, app.backend
        assert store is not None
        done, started = 0, time.perf_counter()
        batch = broker.receive(["celery"], owner="profile", limit=64, timeout=0.5)
        while done < N:
            if mode == "one trip":
                metas = [(d.message.task_id or "", build_meta(d.message.task_id or "", None,
                                                              "SUCCESS")) for d in batch]
                done += len(batch)
                _, _, batch = broker.settle_and_receive(store, metas, None, batch, ["celery"],
                                                        owner="profile", limit=64)
                continue
            if done:
                batch = broker.receive(["celery"], owner="profile", limit=64, timeout=0.5)
            metas = [(d.message.task_id or "", build_meta(parse_request(d.message, None).id, None,
                                                          "SUCCESS")) for d in batch]
            if mode == "both batched":
                store.set_many(metas)
            else:
                for task_id, meta in metas:
                    store.set(task_id, meta)
            if mode == "each alone":
                for delivery in batch:
                    broker.ack([delivery])
            else:
                broker.ack(batch)
            done += len(batch)
        print(f"settle {mode:<12} (receive 64, no task body): "
              f"{N / (time.perf_counter() - started):,.0f} tasks/s")
        clean(prefix)


def main() -> None:
    parts = sys.argv[1:] or ["delay", "drain", "ceiling"]
    for part in parts:
        {"delay": part_delay, "drain": part_drain, "ceiling": part_ceiling}[part]()


if __name__ == "__main__":
    main()
