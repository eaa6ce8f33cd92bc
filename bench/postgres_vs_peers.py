"""Benchmark: celeriac on PostgreSQL against Celery's best setup on Redis and Procrastinate.

All in one run, on this machine's shared servers (loopback), 2-core budget:

* **drain**: N no-op tasks (default 10,000) are published, then the workers are
  started; the clock starts when the first message is taken and stops when
  nothing is waiting or running, so acknowledgements are included.

  - ``celeriac-pg-default``: ``celeriac worker`` with no tuning flag (prefork, one
    child per core, default prefetch), PostgreSQL as broker *and* result store;
  - ``celeriac-pg-solo-x2``: two solo workers with prefetch 64 (the Redis bench's
    best celeriac shape), for reference;
  - ``celery-redis-solo-x2`` / ``celery-redis-prefork-c2``: real Celery 5.7 on Redis
    (broker and results), prefetch 64, without mingle/gossip/heartbeat — the best
    setups of ``bench/redis_vs_celery.py``;
  - ``procrastinate``: Procrastinate (bench-only dependency) on the same PostgreSQL
    server, in a database of its own, two ``procrastinate worker`` processes with
    ``--concurrency 10``; its job table is ANALYZEd after filling (its best case
    here, where autovacuum is off).
* **delay() p50/p99**: 2,000 sequential ``noop.delay()`` calls on the celeriac
  PostgreSQL client (publish only).
* **queue table size**: ``pg_total_relation_size`` of ``<schema>.messages`` before
  publishing, full, drained, and after celeriac's maintenance pass (VACUUM); and a
  second fill-and-drain cycle to show the size stays bounded.

Every celeriac run uses its own schema, Celery its own Redis key prefix (db 12),
Procrastinate its own database; all are dropped afterwards. Targets (reported,
never asserted): drain >= Celery's best on Redis and >= 2x Procrastinate;
``delay()`` p50 <= 1 ms. ``--write`` writes the report as this benchmark's section
of ``bench/RESULTS.md`` (between its markers; the other sections are kept).

Usage::

    .venv/bin/pip install -e '.[bench,postgres]'
    .venv/bin/python bench/postgres_vs_peers.py --write
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import redis
from benchlib import replace_section

HERE = Path(__file__).resolve().parent
PG = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
SECTION = ("## celeriac on PostgreSQL vs Celery on Redis and Procrastinate "
           "(`bench/postgres_vs_peers.py`)")

CELERIAC_TASKS = '''\
import os
from celeriac import Celery
app = Celery("bench_pg", broker=os.environ["BENCH_URL"], backend=os.environ["BENCH_URL"])

@app.task(name="bench.noop")
def noop():
    return None
'''
CELERY_TASKS = '''\
import os
from celery import Celery
URL, PREFIX = os.environ["BENCH_URL"], os.environ["BENCH_PREFIX"]
app = Celery("bench_celery", broker=URL, backend=URL)
app.conf.broker_transport_options = {"global_keyprefix": PREFIX}
app.conf.result_backend_transport_options = {"global_keyprefix": PREFIX}

@app.task(name="bench.noop")
def noop():
    return None
'''
PROC_TASKS = '''\
import os
import procrastinate
app = procrastinate.App(connector=procrastinate.PsycopgConnector(
    conninfo=os.environ["BENCH_URL"]))

@app.task(name="bench.noop")
def noop():
    return None
'''
CELERY_FLAGS = ["--without-mingle", "--without-gossip", "--without-heartbeat",
                "--prefetch-multiplier", "64", "-l", "WARNING"]


def spawn(argv: list[str], workdir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, cwd=workdir, env={**os.environ, **env,
                                                    "PYTHONPATH": str(workdir)},
                            stdout=subprocess.DEVNULL, stderr=open(workdir / "err.log", "ab"),
                            start_new_session=True)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)


def clock(pending: Any, total: int, limit: float = 600.0) -> float:
    """Seconds from the first message taken until nothing waits or runs."""
    deadline = time.monotonic() + limit
    while pending() >= total:
        if time.monotonic() > deadline:
            raise RuntimeError("workers never started")
        time.sleep(0.002)
    start = time.monotonic()
    while pending() > 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"drain stuck at {pending()} pending")
        time.sleep(0.005)
    return time.monotonic() - start


def table_size(schema: str) -> int:
    with psycopg.connect(PG, autocommit=True) as conn:
        row = conn.execute("SELECT pg_total_relation_size(%s::regclass)",
                           (f"{schema}.messages",)).fetchone()
    return int(row[0]) if row else 0


def celeriac_run(total: int, tails: list[list[str]], workdir: Path,
                 sizes: dict[str, int] | None = None) -> dict[str, float]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    url = f"{PG}?schema={schema}"
    (workdir / "bench_pg.py").write_text(CELERIAC_TASKS)
    os.environ["BENCH_URL"] = url
    sys.path.insert(0, str(workdir))
    sys.modules.pop("bench_pg", None)
    import bench_pg  # type: ignore[import-not-found]

    from celeriac.app.publish import build_message
    from celeriac.brokers.base import Publish

    app = bench_pg.app
    out: dict[str, float] = {}
    try:
        broker = app.broker
        broker.stats("celery")  # creates the schema
        if sizes is not None:
            sizes["empty"] = table_size(schema)
            samples = []
            for _ in range(2000):
                t = time.perf_counter()
                bench_pg.noop.delay()
                samples.append(time.perf_counter() - t)
            samples.sort()
            out["p50"] = statistics.median(samples) * 1000
            out["p99"] = samples[int(len(samples) * 0.99)] * 1000
            broker.purge("celery")
        for cycle in range(2 if sizes is not None else 1):
            items = []
            for _ in range(total):
                msg, queue, nb, prio = build_message(app, "bench.noop", [], {},
                                                     str(uuid.uuid4()), {})
                items.append(Publish(msg, queue, nb, prio))
            broker.publish_many(items)
            if sizes is not None:
                sizes[f"full{cycle}"] = table_size(schema)

            def pending() -> int:
                s = broker.stats("celery")
                return s.ready + s.leased + s.delayed

            procs = [spawn([sys.executable, "-m", "celeriac", "-A", "bench_pg", "worker",
                            *tail], workdir, {"BENCH_URL": url}) for tail in tails]
            try:
                out.setdefault("drain", total / clock(pending, total))
            finally:
                stop(procs)
            if sizes is not None:
                sizes[f"drained{cycle}"] = table_size(schema)
                broker.db.maintenance.run_once(force=True)
                sizes[f"vacuumed{cycle}"] = table_size(schema)
    finally:
        app.close()
        sys.path.remove(str(workdir))
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return out


def celery_run(total: int, tails: list[list[str]], workdir: Path) -> float:
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    (workdir / "bench_celery.py").write_text(CELERY_TASKS)
    env = {"BENCH_URL": REDIS, "BENCH_PREFIX": prefix}
    code = ("import sys, bench_celery\n"
            f"for _ in range({total}): bench_celery.noop.delay()\n")
    subprocess.run([sys.executable, "-c", code], cwd=workdir, check=True,
                   env={**os.environ, **env, "PYTHONPATH": str(workdir)})
    raw = redis.Redis.from_url(REDIS)

    def pending() -> int:
        return int(raw.llen(f"{prefix}celery")) + int(raw.hlen(f"{prefix}unacked"))

    procs = [spawn([sys.executable, "-m", "celery", "-A", "bench_celery", "worker", *tail,
                    *CELERY_FLAGS], workdir, env) for tail in tails]
    try:
        return total / clock(pending, total)
    finally:
        stop(procs)
        keys = list(raw.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            raw.delete(*keys[start:start + 1000])


def procrastinate_run(total: int, workdir: Path) -> float:
    name = f"bench_proc_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = PG.rsplit("/", 1)[0] + "/" + name
    (workdir / "bench_proc.py").write_text(PROC_TASKS)
    env = {"BENCH_URL": url}
    fill = ("import bench_proc\n"
            "with bench_proc.app.open():\n"
            "    bench_proc.app.schema_manager.apply_schema()\n"
            f"    for start in range(0, {total}, 1000):\n"
            f"        bench_proc.noop.batch_defer(*[{{}}] * min(1000, {total} - start))\n")
    try:
        subprocess.run([sys.executable, "-c", fill], cwd=workdir, check=True,
                       env={**os.environ, **env, "PYTHONPATH": str(workdir)})
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE procrastinate_jobs")

            def pending() -> int:
                row = conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status "
                                   "IN ('todo', 'doing')").fetchone()
                return int(row[0]) if row else 0

            procs = [spawn([sys.executable, "-m", "procrastinate", "--app", "bench_proc.app",
                            "worker", "--concurrency", "10"], workdir, env) for _ in range(2)]
            try:
                return total / clock(pending, total)
            finally:
                stop(procs)
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def report(total: int, rates: dict[str, float], lat: dict[str, float],
           sizes: dict[str, int], load: tuple[float, float]) -> str:
    import celery

    import celeriac

    with psycopg.connect(PG, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        autovacuum = conn.execute("SHOW autovacuum").fetchone()[0]  # type: ignore[index]
    kib = {k: v / 1024 for k, v in sizes.items()}
    celery_best = max(v for k, v in rates.items() if k.startswith("celery"))
    ours = rates["celeriac-pg-default"]
    lines = [f"{'setup':<26}{'drain/s':>10}"]
    lines += [f"{name:<26}{rate:>10,.0f}" for name, rate in rates.items()]
    lines += [
        "",
        f"drain (celeriac-pg-default) {ours:,.0f}/s vs Celery's best on Redis "
        f"{celery_best:,.0f}/s: {ours / celery_best:.2f}x (target >= 1x)",
        f"drain vs Procrastinate {rates['procrastinate']:,.0f}/s: "
        f"{ours / rates['procrastinate']:.1f}x (target >= 2x)",
        f"delay() on PostgreSQL: p50 {lat['p50']:.3f} ms, p99 {lat['p99']:.3f} ms "
        "(target p50 <= 1 ms)",
        f"queue table (KiB): empty {kib['empty']:.0f}; cycle 1 full {kib['full0']:.0f}, "
        f"drained {kib['drained0']:.0f}, after VACUUM {kib['vacuumed0']:.0f}; cycle 2 full "
        f"{kib['full1']:.0f}, drained {kib['drained1']:.0f}, after VACUUM "
        f"{kib['vacuumed1']:.0f}",
    ]
    return "\n".join([
        SECTION, "",
        f"Produced by `python bench/postgres_vs_peers.py --write` ({total:,} no-op tasks "
        f"per drain), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
        f"Machine: {os.cpu_count()} cores, Linux {platform.release()}, Python "
        f"{platform.python_version()}, PostgreSQL {version} (autovacuum {autovacuum}, "
        f"fsync on) and Redis on loopback, celery {celery.__version__}, celeriac "
        f"{celeriac.__version__}; 1-minute load average {load[0]:.2f} before the run "
        f"and {load[1]:.2f} after (the machine is shared: numbers are noisy).", "",
        "```", *lines, "```", "",
        "* celeriac's default worker stores every result in PostgreSQL and acknowledges "
        "after the task (at-least-once); Celery's setups store results in Redis and "
        "acknowledge before running (its default).",
        "* Procrastinate keeps finished jobs (its default `delete_jobs=never`); "
        "celeriac deletes acknowledged rows, so its queue table holds only waiting and "
        "running work, and VACUUM (run by celeriac itself when autovacuum is off) makes "
        "the space reusable: the second cycle does not grow the table. \"drained\" is larger "
        "than \"full\" because each lease rewrites its row once before the ack deletes it.",
        "* The load average shows other engineers' test runs on the same 2 cores during "
        "the run; ratios between setups measured minutes apart are approximate.", "",
    ])


def write_section(text: str) -> None:
    """This script's section of RESULTS.md (between its markers; the rest is kept)."""
    path = HERE / "RESULTS.md"
    current = path.read_text() if path.exists() else ""
    path.write_text(replace_section(current, "postgres_vs_peers.py", text, after_title=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()
    before = os.getloadavg()[0]
    rates: dict[str, float] = {}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="celeriac-pgbench-") as tmp:
        work = Path(tmp)
        lat = celeriac_run(args.tasks, [[]], work, sizes)
        rates["celeriac-pg-default"] = lat.pop("drain")
        print("celeriac default", rates, lat, flush=True)
        rates["celeriac-pg-solo-x2"] = celeriac_run(
            args.tasks, [["-P", "solo", "--prefetch-multiplier", "64"]] * 2, work)["drain"]
        rates["celery-redis-solo-x2"] = celery_run(args.tasks, [["-P", "solo"]] * 2, work)
        rates["celery-redis-prefork-c2"] = celery_run(args.tasks, [["-P", "prefork", "-c",
                                                                     "2"]], work)
        rates["procrastinate"] = procrastinate_run(args.tasks, work)
    text = report(args.tasks, rates, lat, sizes, (before, os.getloadavg()[0]))
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
