"""Bench: drain throughput of the worker pools (prefork, threads, asyncio) on SQLite.

Usage: ``.venv/bin/python bench/pools.py [--tasks 20000] [--pools prefork,threads,asyncio]
[--concurrency 2] [--prefetch-multiplier 1] [--durability durable|fast] [--async-sleep]``.

For each pool, in a fresh temporary directory: publish ``--tasks`` no-op tasks
(``publish_many``, 1,000 per transaction), start ``python -m celeriac -A
benchpools worker -P <pool> -c <concurrency>``, start the clock when the worker
is ready and stop it when the queue has nothing ready or leased; then
check every result is ``SUCCESS`` and print tasks/s. Workers log at WARNING
(per-task INFO lines cost about as much as the task itself); readiness is the
node's first heartbeat record. ``--async-sleep`` also
times 1,000 ``async def`` tasks that ``await asyncio.sleep(0.1)`` on ``-P asyncio
-c 1000`` (target: under 2 s). Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

PROJECT = '''
import asyncio
from celeriac import Celery

app = Celery("benchpools", broker={url!r})


@app.task
def noop():
    return None


@app.task
async def anoop():
    return None


@app.task
async def asleep(seconds):
    await asyncio.sleep(seconds)
'''


def load(workdir: Path, url: str) -> Any:
    (workdir / "benchpools.py").write_text(PROJECT.format(url=url))
    sys.path.insert(0, str(workdir))
    sys.modules.pop("benchpools", None)
    import benchpools

    sys.path.remove(str(workdir))
    return benchpools


def publish(proj: Any, name: str, n: int, args: tuple[Any, ...] = ()) -> list[str]:
    from celeriac.app.publish import build_message
    from celeriac.brokers.base import Publish

    ids: list[str] = []
    for offset in range(0, n, 1000):
        items = []
        for _ in range(min(1000, n - offset)):
            task_id = str(uuid.uuid4())
            message, queue, nb, prio = build_message(proj.app, f"benchpools.{name}", args, {},
                                                     task_id, {})
            items.append(Publish(message, queue, nb, prio))
            ids.append(task_id)
        proj.app.broker.publish_many(items)
    return ids


def run_worker(workdir: Path, args: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
    log = workdir / f"worker-{uuid.uuid4().hex[:6]}.log"
    env = dict(os.environ, PYTHONPATH=str(workdir))
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "celeriac", "-A", "benchpools", "worker",
                                 "-l", "WARNING", *args], cwd=workdir, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    return proc, log


def wait_ready(proj: Any, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Ready = the node published its first heartbeat (the worker logs at WARNING)."""
    from celeriac.worker.health import read_nodes

    deadline = time.monotonic() + 60
    while not read_nodes(proj.app):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.005)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def drain(proj: Any, workdir: Path, ids: list[str], args: list[str]) -> tuple[int, float]:
    broker, backend = proj.app.broker, proj.app.backend
    proc, log = run_worker(workdir, args)
    try:
        wait_ready(proj, proc, log)
        total = len(ids)
        while True:  # the clock starts at the first leased message (start-up excluded)
            stats = broker.stats("celery")
            if stats.ready < total:
                break
            time.sleep(0.001)
        left = stats.ready + stats.leased  # not yet acknowledged when the clock starts
        start = time.perf_counter()
        while True:
            stats = broker.stats("celery")
            if stats.ready + stats.leased == 0:
                break
            time.sleep(0.05)  # stats() counts rows: polling faster steals CPU from workers
        seconds = time.perf_counter() - start
    finally:
        stop(proc)
    done = sum(1 for i in range(0, len(ids), 5000)
               for meta in backend.get_many(ids[i:i + 5000]).values()
               if meta.get("status") == "SUCCESS")
    if done != len(ids):
        raise SystemExit(f"only {done} of {len(ids)} results stored")
    return left, seconds


def one_pool(pool: str, opts: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="celeriac-bench-pools-"))
    try:
        url = f"sqlite:///{workdir / 'bench.sqlite3'}?durability={opts.durability}"
        proj = load(workdir, url)
        name = "anoop" if pool == "asyncio" else "noop"
        ids = publish(proj, name, opts.tasks)
        concurrency = opts.concurrency if pool != "asyncio" else max(opts.concurrency, 100)
        args = ["-P", pool, "-c", str(concurrency),
                "--prefetch-multiplier", str(opts.prefetch_multiplier)]
        left, seconds = drain(proj, workdir, ids, args)
        print(f"{pool:8s} -c {concurrency:<4d} {left:>7d} tasks in {seconds:7.2f}s = "
              f"{left / seconds:8.0f} tasks/s", flush=True)
        if opts.async_sleep and pool == "asyncio":
            ids = publish(proj, "asleep", 1000, (0.1,))
            left, seconds = drain(proj, workdir, ids, ["-P", "asyncio", "-c", "1000"])
            print(f"asyncio  -c 1000 {left:>7d} x await asyncio.sleep(0.1) in {seconds:.2f}s "
                  "(target < 2 s)", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--pools", default="prefork,threads,asyncio")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--prefetch-multiplier", type=int, default=1)
    parser.add_argument("--durability", default="durable", choices=["durable", "fast"])
    parser.add_argument("--async-sleep", action="store_true")
    opts = parser.parse_args()
    print(f"drain {opts.tasks} no-op tasks, SQLite ({opts.durability}), "
          f"prefetch multiplier {opts.prefetch_multiplier}, {os.cpu_count()} CPUs")
    for pool in opts.pools.split(","):
        one_pool(pool.strip(), opts)


if __name__ == "__main__":
    main()
