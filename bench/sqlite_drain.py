"""Benchmark: enqueue and drain no-op tasks on the embedded SQLite broker.

What it measures (one table at the end):

* **enqueue**: ``noop.delay()`` one call at a time (each call is one durable
  SQLite transaction), and ``broker.publish_many`` (one transaction per batch);
* **drain**: worker processes started by the CLI (``python -m celeriac -A
  benchproj worker``) consume a pre-filled queue; the clock starts when every
  worker has signalled ``worker_ready`` (counting what is left then) and stops
  when the queue has nothing ready or leased; every result is then checked.
  Configurations: ``default`` (``celeriac worker`` as the README starts it: prefork,
  one child per CPU, adaptive prefetch), 2 x ``-P solo``, 2 x ``-P threads -c 1``,
  1 x ``-P prefork -c 2``; every one with the default prefetch unless
  ``--prefetch-multiplier`` is given;
* with ``--celery``: real Celery 5 on Redis (db 12, a unique key prefix, removed
  afterwards), 2 x ``celery worker -P solo --prefetch-multiplier 64``, results
  in Redis, measured the same way;
* with ``--profile``: a cProfile of one in-process consumer (solo pool, default
  prefetch rule) draining the queue, top functions by cumulative and internal time.

Usage::

    .venv/bin/python bench/sqlite_drain.py                 # 20,000 tasks, defaults
    .venv/bin/python bench/sqlite_drain.py --tasks 5000 --celery --profile

Target (reported, not asserted): drain >= 3,000 tasks/s on 2 cores.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import service_up, wait_for

TARGET = 3000.0
BATCH = 1000
PROJECT = '''
"""No-op tasks for the drain benchmark (embedded SQLite broker and results)."""
import os
from pathlib import Path

from celeriac import Celery
from celeriac.signals import worker_ready

app = Celery("benchproj")


@worker_ready.connect
def announce(**kwargs):
    Path(os.environ["BENCH_READY_DIR"], f"ready-{os.getpid()}").touch()


@app.task
def noop():
    return None
'''
CELERY_PROJECT = '''
"""The same no-op task for real Celery on Redis (unique key prefix, db 12)."""
import os
from pathlib import Path

from celery import Celery
from celery.signals import worker_ready

URL = os.environ["BENCH_REDIS_URL"]
PREFIX = os.environ["BENCH_PREFIX"]
app = Celery("celerybench", broker=URL, backend=URL)
app.conf.update(
    broker_transport_options={"global_keyprefix": PREFIX},
    result_backend_transport_options={"global_keyprefix": PREFIX},
    task_default_queue=PREFIX + "q", worker_prefetch_multiplier=64,
    worker_hijack_root_logger=True,
)


@worker_ready.connect
def announce(**kwargs):
    Path(os.environ["BENCH_READY_DIR"], f"ready-{os.getpid()}").touch()


@app.task
def noop():
    return None
'''


@dataclass
class Row:
    """One line of the results table."""

    what: str
    tasks: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds if self.seconds > 0 else float("inf")


def say(text: str) -> None:
    print(f"# {text}", file=sys.stderr, flush=True)


class Workers:
    """Worker subprocesses writing to log files; each announces ``worker_ready`` with a
    file in ``BENCH_READY_DIR`` (works at any log level)."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.ready_dir = workdir / "ready"
        self.ready_dir.mkdir(exist_ok=True)
        self.env = dict(env, BENCH_READY_DIR=str(self.ready_dir))
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, command: list[str]) -> None:
        log = self.workdir / f"worker-{len(self.procs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(command, cwd=self.workdir, env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT)
        self.procs.append((proc, log))

    def logs(self) -> list[str]:
        return [log.read_text(errors="replace") for _, log in self.procs]

    def all_ready(self) -> bool:
        for (proc, _), text in zip(self.procs, self.logs(), strict=True):
            if proc.poll() is not None:
                raise SystemExit(f"a worker exited early:\n{text}")
        return len(list(self.ready_dir.glob("ready-*"))) >= len(self.procs)

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.procs.clear()
        for marker in self.ready_dir.glob("ready-*"):
            marker.unlink()


# -- celeriac on SQLite ---------------------------------------------------------------------

def load_project(workdir: Path) -> Any:
    (workdir / "benchproj.py").write_text(PROJECT)
    sys.path.insert(0, str(workdir))
    return importlib.import_module("benchproj")


def enqueue_delay(proj: Any, n: int) -> tuple[Row, list[str]]:
    start = time.perf_counter()
    ids = [proj.noop.delay().id for _ in range(n)]
    return Row("enqueue: noop.delay() x1", n, time.perf_counter() - start), ids


def enqueue_many(proj: Any, n: int) -> tuple[Row, list[str]]:
    from celeriac.app.publish import build_message
    from celeriac.brokers.base import Publish

    app = proj.app
    ids: list[str] = []
    start = time.perf_counter()
    for offset in range(0, n, BATCH):
        items = []
        for _ in range(min(BATCH, n - offset)):
            task_id = str(uuid.uuid4())
            message, queue, not_before, priority = build_message(
                app, "benchproj.noop", (), {}, task_id, {})
            items.append(Publish(message, queue, not_before, priority))
            ids.append(task_id)
        app.broker.publish_many(items)
    return Row(f"enqueue: publish_many x{BATCH}", n, time.perf_counter() - start), ids


def drain(proj: Any, workers: Workers, commands: list[list[str]], ids: list[str],
          label: str) -> Row:
    broker, backend = proj.app.broker, proj.app.backend
    for command in commands:
        workers.start(command)
    wait_for(workers.all_ready, 60, "workers to be ready", interval=0.01)
    start = time.perf_counter()
    stats = broker.stats("celery")
    left = stats.ready + stats.leased
    wait_for(lambda: (lambda s: s.ready + s.leased == 0)(broker.stats("celery")), 600,
             "the queue to drain", interval=0.01)
    seconds = time.perf_counter() - start
    workers.stop()
    done = sum(1 for i in range(0, len(ids), 5000)
               for meta in backend.get_many(ids[i:i + 5000]).values()
               if meta.get("status") == "SUCCESS")
    if done != len(ids):
        raise SystemExit(f"{label}: only {done} of {len(ids)} results stored")
    return Row(f"drain: {label}", left, seconds)


def prefork_available() -> bool:
    return importlib.util.find_spec("celeriac.worker.supervisor") is not None


def run_celeriac(workdir: Path, n: int, pools: list[str], durability: str,
                 prefetch: int | None, loglevel: str) -> list[Row]:
    db = workdir / "bench.sqlite3"
    os.environ["CELERIAC_SQLITE_PATH"] = str(db)
    if durability != "durable":
        os.environ["CELERIAC_BROKER_URL"] = f"sqlite:///{db}?durability={durability}"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proj = load_project(workdir)
    rows: list[Row] = []
    base = [sys.executable, "-m", "celeriac", "-A", "benchproj", "worker", "-l", loglevel]
    if prefetch is not None:
        base += ["--prefetch-multiplier", str(prefetch)]
    configs = {
        "default": ("celeriac worker (defaults)", [base]),
        "solo": ("2 x -P solo", [[*base, "-P", "solo", "-n", f"w{i}@%h"] for i in (1, 2)]),
        "threads": ("2 x -P threads -c 1",
                    [[*base, "-P", "threads", "-c", "1", "-n", f"w{i}@%h"] for i in (1, 2)]),
        "prefork": ("1 x -P prefork -c 2", [[*base, "-P", "prefork", "-c", "2"]]),
    }
    workers = Workers(workdir, env)
    try:
        for index, pool in enumerate(pools):
            if pool == "prefork" and not prefork_available():
                say("prefork pool not available yet: skipped")
                continue
            label, commands = configs[pool]
            proj.app.broker.purge("celery")
            row, ids = (enqueue_delay if index == 0 else enqueue_many)(proj, n)
            rows.append(row)
            say(f"{row.what}: {row.rate:,.0f}/s; draining with {label}")
            rows.append(drain(proj, workers, commands, ids, label))
            say(f"{rows[-1].what}: {rows[-1].rate:,.0f}/s")
    finally:
        workers.stop()
    return rows


def profile_consumer(workdir: Path, n: int, top: int = 25) -> None:
    """cProfile one in-process solo consumer draining ``n`` tasks (main thread)."""
    import cProfile
    import pstats
    import threading

    from celeriac.worker.consumer import Consumer
    from celeriac.worker.pools import SoloPool
    from celeriac.worker.prefetch import PrefetchRule

    proj = load_project(workdir)
    proj.app.broker.purge("celery")
    enqueue_many(proj, n)
    proj.app.finalize()
    rule = PrefetchRule.for_worker(proj.app.conf, 1, None)
    consumer = Consumer(proj.app, ["celery"], SoloPool(), poll_timeout=0.1, prefetch=rule)

    def stop_when_drained() -> None:
        broker = proj.app.broker
        wait_for(lambda: (lambda s: s.ready + s.leased == 0)(broker.stats("celery")), 600,
                 "the profiled drain", interval=0.05)
        consumer.stop()

    watcher = threading.Thread(target=stop_when_drained, daemon=True)
    watcher.start()
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.runcall(consumer.run)
    seconds = time.perf_counter() - start
    print(f"\nProfile: one in-process solo consumer drained {n} tasks in {seconds:.2f}s "
          f"({n / seconds:,.0f}/s under cProfile)")
    for key in ("cumulative", "tottime"):
        print(f"\n-- top {top} by {key} --")
        pstats.Stats(profiler, stream=sys.stdout).strip_dirs().sort_stats(key).print_stats(top)


# -- Celery on Redis ----------------------------------------------------------------------

def run_celery(workdir: Path, n: int, loglevel: str) -> list[Row]:
    if not service_up() or importlib.util.find_spec("celery") is None:
        say("--celery: Redis not reachable or celery not installed: skipped")
        return []
    import redis

    prefix = f"celeriac-bench-{uuid.uuid4().hex[:10]}:"
    url = "redis://127.0.0.1:6379/12"
    env = dict(os.environ, BENCH_REDIS_URL=url, BENCH_PREFIX=prefix, PYTHONUNBUFFERED="1")
    os.environ.update(BENCH_REDIS_URL=url, BENCH_PREFIX=prefix)
    (workdir / "celerybench.py").write_text(CELERY_PROJECT)
    sys.path.insert(0, str(workdir))
    bench = importlib.import_module("celerybench")
    client = redis.Redis.from_url(url)
    celery = str(Path(sys.executable).with_name("celery"))
    workers = Workers(workdir, env)
    try:
        start = time.perf_counter()
        ids = [bench.noop.delay().id for _ in range(n)]
        enqueue = Row("celery enqueue: delay() x1", n, time.perf_counter() - start)
        say(f"{enqueue.what}: {enqueue.rate:,.0f}/s")
        for i in (1, 2):
            workers.start([celery, "-A", "celerybench", "worker", "-P", "solo", "-l", loglevel,
                           "--prefetch-multiplier", "64", "-n", f"cb{i}-{prefix[:-1]}@%h",
                           "--without-gossip", "--without-mingle"])
        wait_for(workers.all_ready, 60, "celery workers", interval=0.01)
        start = time.perf_counter()
        keys = [f"{prefix}celery-task-meta-{task_id}" for task_id in ids]
        left = n - sum(1 for v in client.mget(keys) if v is not None)
        # cheap polling while the queue drains, then wait for the last results
        wait_for(lambda: client.llen(f"{prefix}{prefix}q") == 0, 600, "celery to drain",
                 interval=0.01)
        wait_for(lambda: all(v is not None for v in client.mget(keys)), 600,
                 "celery's last results", interval=0.01)
        drain_row = Row("celery drain: 2 x -P solo, prefetch 64 (Redis)", left,
                        time.perf_counter() - start)
        say(f"{drain_row.what}: {drain_row.rate:,.0f}/s")
        return [enqueue, drain_row]
    finally:
        workers.stop()
        stale = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if stale:
            client.delete(*stale)
        client.close()


# -- main ---------------------------------------------------------------------------------

def print_table(rows: list[Row], n: int, settings: str) -> None:
    if not rows:
        return
    print(f"\nSQLite drain benchmark: {n:,} no-op tasks, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}, {settings}")
    print(f"{'measurement':<52} {'tasks':>7} {'seconds':>8} {'tasks/s':>9}")
    for row in rows:
        print(f"{row.what:<52} {row.tasks:>7} {row.seconds:>8.2f} {row.rate:>9,.0f}")
    drains = [r.rate for r in rows if r.what.startswith("drain")]
    if drains:
        best = max(drains)
        verdict = "meets" if best >= TARGET else "is below"
        print(f"best SQLite drain {best:,.0f} tasks/s {verdict} the {TARGET:,.0f}/s target")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--pools", default="default,solo,threads",
                        help="comma-separated: default, solo, threads, prefork")
    parser.add_argument("--celery", action="store_true",
                        help="also measure Celery on Redis (db 12) for comparison")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile one in-process consumer draining the queue")
    parser.add_argument("--profile-tasks", type=int, default=5000)
    parser.add_argument("--durability", choices=["durable", "fast"], default="durable",
                        help="SQLite durability: durable = synchronous FULL (default), "
                        "fast = NORMAL")
    parser.add_argument("--loglevel", default="WARNING",
                        help="worker log level for both celeriac and Celery (INFO logs "
                        "every task)")
    parser.add_argument("--prefetch-multiplier", type=int, default=None,
                        help="celeriac worker_prefetch_multiplier (default: not set, the "
                        "adaptive prefetch; 1 = no prefetch)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="celeriac-bench-"))
    try:
        pools = [p for p in args.pools.split(",") if p]
        rows = run_celeriac(workdir, args.tasks, pools, args.durability,
                            args.prefetch_multiplier, args.loglevel)
        if args.celery:
            rows += run_celery(workdir, args.tasks, args.loglevel)
        print_table(rows, args.tasks, f"durability={args.durability}, "
                    f"prefetch_multiplier={args.prefetch_multiplier or 'default'}, "
                    f"loglevel={args.loglevel}")
        if args.profile:
            profile_consumer(workdir, args.profile_tasks)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
