"""Bench: worker CPU µs per task on Redis, comparing source trees in one run.

Usage::

    .venv/bin/python bench/worker_cpu.py [--tasks 5000] [--rounds 3] [--ignore-result]
        [--src LABEL=PATH ...] [--worker-args '-c 2'] [--url redis://127.0.0.1:6379/10]

Each round, for each ``--src`` (default: this checkout's ``src``), a real
``celeriac -A benchcpu worker`` subprocess is started with ``PYTHONPATH`` pointing at
that source tree, warmed up on 300 tasks, then ``--tasks`` no-op tasks are published
(``publish_many``) and drained; the worker process tree's CPU time (/proc, ``benchlib``: the
worker and its prefork children, user + system) over the drain, divided by the tasks,
is the number (the main process's share, the prefork supervisor, is printed too).
``--ignore-result`` runs ``ignore_result=True`` tasks (no result writes: the
acknowledgement-only path). Sources alternate within each round so a
loaded machine affects them alike; compare the numbers as ratios within one run.
Keys live under a unique prefix and are deleted afterwards. Numbers are printed,
never asserted.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from benchlib import cpu_seconds, stop_process, tree_cpu_seconds

PROJECT = '''
from celeriac import Celery

app = Celery("benchcpu", broker={url!r}, backend={url!r})
app.conf.broker_transport_options = {{"global_keyprefix": {prefix!r}}}
app.conf.result_backend_transport_options = {{"global_keyprefix": {prefix!r}}}


@app.task(name="benchcpu.noop")
def noop():
    return None


@app.task(name="benchcpu.quiet", ignore_result=True)
def quiet():
    return None
'''

WARMUP = 300


def publish(app: Any, name: str, count: int) -> None:
    from celeriac.app.publish import build_message
    from celeriac.brokers.base import Publish

    for offset in range(0, count, 1000):
        items = []
        for _ in range(min(1000, count - offset)):
            message, queue, nb, prio = build_message(app, name, [], {}, str(uuid.uuid4()), {})
            items.append(Publish(message, queue, nb, prio))
        app.broker.publish_many(items)


def wait_empty(app: Any, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        stats = app.broker.stats("celery")
        if stats.ready + stats.leased + stats.delayed == 0:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"queue not drained: {stats}")
        time.sleep(0.05)


def one_drain(app: Any, workdir: Path, src: str, opts: argparse.Namespace
              ) -> tuple[float, float, float]:
    """(µs per task of the whole worker tree, of its main process alone, tasks/s from the
    publish to the queue being empty)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, str(workdir)]))
    log = workdir / f"worker-{uuid.uuid4().hex[:6]}.log"
    name = "benchcpu.quiet" if opts.ignore_result else "benchcpu.noop"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "celeriac", "-A", "benchcpu", "worker",
                                 "-l", "WARNING", *shlex.split(opts.worker_args)],
                                cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        publish(app, name, WARMUP)
        wait_empty(app)
        time.sleep(0.5)
        main_before, tree_before = cpu_seconds([proc.pid]), tree_cpu_seconds([proc.pid])
        started = time.perf_counter()
        publish(app, name, opts.tasks)
        wait_empty(app)
        rate = opts.tasks / (time.perf_counter() - started)
        main = cpu_seconds([proc.pid]) - main_before
        used = tree_cpu_seconds([proc.pid]) - tree_before
    finally:
        stop_process(proc, grace=60)
    if proc.returncode not in (0, -signal.SIGTERM):
        print(log.read_text(errors="replace"), file=sys.stderr)
    return used / opts.tasks * 1e6, main / opts.tasks * 1e6, rate


def main() -> None:
    here = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ignore-result", action="store_true")
    parser.add_argument("--src", action="append", default=[],
                        help="LABEL=PATH of a source tree (the directory holding celeriac/)")
    parser.add_argument("--worker-args", default="-c 2")
    parser.add_argument("--url", default="redis://127.0.0.1:6379/10")
    opts = parser.parse_args()
    sources = dict(s.split("=", 1) for s in opts.src) or {"this": str(here / "src")}
    prefix = f"bench-cpu-{uuid.uuid4().hex[:8]}:"
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "benchcpu.py").write_text(PROJECT.format(url=opts.url, prefix=prefix))
        sys.path.insert(0, str(workdir))
        import benchcpu

        app = benchcpu.app
        runs: dict[str, list[float]] = {label: [] for label in sources}
        rates: dict[str, list[float]] = {label: [] for label in sources}
        try:
            for round_no in range(opts.rounds):
                for label, src in sources.items():
                    us, main, rate = one_drain(app, workdir, src, opts)
                    runs[label].append(us)
                    rates[label].append(rate)
                    print(f"round {round_no + 1} {label}: {us:.1f} µs/task (main process "
                          f"{main:.1f}), {rate:,.0f} tasks/s", flush=True)
        finally:
            raw = redis.Redis.from_url(opts.url)
            keys = list(raw.scan_iter(match=f"{prefix}*", count=1000))
            for i in range(0, len(keys), 1000):
                raw.delete(*keys[i:i + 1000])
    first = statistics.median(next(iter(runs.values())))
    for label, values in runs.items():
        med = statistics.median(values)
        print(f"{label}: median {med:.1f} µs/task (min {min(values):.1f}) "
              f"= {med / first:.3f}x {next(iter(runs))}; "
              f"median {statistics.median(rates[label]):,.0f} tasks/s")


if __name__ == "__main__":
    main()
