"""Bench: publishing a group of 10,000 no-op tasks (target: >= 20,000 tasks/s on Redis).

Usage: ``.venv/bin/python bench/group_publish.py [--n 10000] [--rounds 3]
[--redis redis://127.0.0.1:6379/11]``. Measures ``group(...).apply_async()``
(freeze, message building and the batched ``broker.publish_many``) on a
temporary SQLite file, and on Redis when it answers (under a unique key
prefix, deleted afterwards). Nothing is consumed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from celeriac import Celery, group


def make_app(broker: str, backend: str | None = None, prefix: str | None = None) -> Celery:
    app = Celery("bench_group", broker=broker, backend=backend, set_as_current=False)
    if prefix:
        app.conf.broker_transport_options = {"global_keyprefix": prefix}
        app.conf.result_backend_transport_options = {"global_keyprefix": prefix}

    @app.task(name="bench.noop")
    def noop(i: int) -> None:
        return None

    return app


def run(app: Celery, n: int, rounds: int) -> list[float]:
    noop = app.tasks["bench.noop"]
    group(noop.s(i) for i in range(10)).apply_async()  # warm up connections and schema
    rates = []
    for _ in range(rounds):
        sigs = [noop.s(i) for i in range(n)]
        start = time.perf_counter()
        res = group(sigs).apply_async()
        elapsed = time.perf_counter() - start
        assert len(res.results) == n
        rates.append(n / elapsed)
    return rates


def report(name: str, rates: list[float]) -> None:
    print(f"{name:8s} best {max(rates):>10,.0f} tasks/s   "
          f"all: {', '.join(f'{r:,.0f}' for r in rates)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/11")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        app = make_app(url)
        report("sqlite", run(app, args.n, args.rounds))
        app.close()
    bench_redis(args.redis, args.n, args.rounds)


def bench_redis(url: str, n: int, rounds: int) -> None:
    try:
        import redis

        client = redis.Redis.from_url(url)
        client.ping()
    except Exception as exc:
        print(f"redis    skipped ({exc})")
        return
    prefix = f"celeriac-bench-{uuid.uuid4().hex[:12]}:"
    app = make_app(url, url, prefix)
    try:
        report("redis", run(app, n, rounds))
    finally:
        app.close()
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start:start + 1000])
        client.close()


if __name__ == "__main__":
    main()
