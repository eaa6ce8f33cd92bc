"""Benchmark: celeriac against real Celery 5.7 on the same Redis, in one run.

For each setup (worker processes started from the CLI, 2-core budget):

* **enqueue**: ``noop.delay()`` called one at a time, N times (default 20,000),
  by a client app in this process configured exactly like the workers (Redis
  broker and Redis result backend);
* **drain**: the workers are started on the filled queue; the clock starts at
  the first message taken and stops when nothing is ready or in flight
  (Celery: ``unacked`` empty; celeriac: no lease left), so acknowledgements
  are included; the last task's result is then read to check results exist;
* **latency**: 500 sequential ``noop.delay().get()`` round trips, p50 / p99;
* **peak RSS**: sum of RSS over the worker processes and their children,
  sampled every 50 ms through ``/proc`` while draining and measuring latency.

Every setup uses its own ``global_keyprefix`` on Redis db 12 (broker and
results), deleted afterwards. Results go to stdout; ``--write`` also writes
``bench/RESULTS.md`` and ``bench/redis_vs_celery.png``. Targets (reported, never
asserted): drain >= 10x and enqueue >= 5x Celery's best, p50 <= 1 ms,
p99 <= 3 ms, RSS no higher than Celery's.

Usage::

    .venv/bin/python bench/redis_vs_celery.py --write
    .venv/bin/python bench/redis_vs_celery.py --rounds 3       # medians of 3 runs (~9 min)
    .venv/bin/python bench/redis_vs_celery.py --tasks 5000 --setups celeriac-threads-x2
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import redis
from benchlib import MemorySampler, replace_section, stop_processes

HERE = Path(__file__).resolve().parent
SEP = "\x06\x16"
CELERY_FLAGS = ["--without-mingle", "--without-gossip", "--without-heartbeat"]
PREFETCH = ["--prefetch-multiplier", "64"]

TASKS = '''\
"""Benchmark tasks ({package} side)."""
import os

from {package} import Celery

URL, PREFIX = os.environ["BENCH_URL"], os.environ["BENCH_PREFIX"]
app = Celery("bench_{package}", broker=URL, backend=URL)
app.conf.broker_transport_options = {{"global_keyprefix": PREFIX}}
app.conf.result_backend_transport_options = {{"global_keyprefix": PREFIX}}


@app.task(name="bench.noop")
def noop():
    return None
'''

#: name -> (package, one argv tail per worker process)
SETUPS: dict[str, tuple[str, list[list[str]]]] = {
    "celery-solo-x2": ("celery", [["-P", "solo", *PREFETCH]] * 2),
    "celery-prefork-c2": ("celery", [["-P", "prefork", "-c", "2", *PREFETCH]]),
    "celeriac-threads-x2": ("celeriac", [["-P", "threads", "-c", "2", *PREFETCH]] * 2),
    "celeriac-solo-x2": ("celeriac", [["-P", "solo", *PREFETCH]] * 2),
    "celeriac-prefork-c2": ("celeriac", [["-P", "prefork", "-c", "2", *PREFETCH]]),
    "celeriac-asyncio": ("celeriac", [["-P", "asyncio", "-c", "100", *PREFETCH]]),
}


@dataclass
class Result:
    setup: str
    package: str
    enqueue: float = 0.0
    drain: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    rss_mb: float = 0.0


# -- processes and memory ------------------------------------------------------------
def start_workers(package: str, tails: list[list[str]], workdir: Path,
                  env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i, tail in enumerate(tails):
        name = ["-n", f"bench{i}-{uuid.uuid4().hex[:6]}@localhost"]
        if package == "celery":
            cmd = [sys.executable, "-m", "celery", "-A", "bench_celery", "worker", *tail,
                   *name, *CELERY_FLAGS, "-l", "WARNING"]
        else:
            cmd = [sys.executable, "-m", "celeriac", "-A", "bench_celeriac", "worker", *tail,
                   *name, "-l", "WARNING"]
        log = open(workdir / f"worker-{package}-{i}.log", "ab")  # noqa: SIM115
        procs.append(subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log,
                                      stderr=subprocess.STDOUT))
        log.close()
    return procs


# -- measurements ----------------------------------------------------------------------
def load_client(workdir: Path, package: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{package}_{uuid.uuid4().hex[:6]}",
                                                  workdir / f"bench_{package}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pending(raw: redis.Redis, prefix: str, package: str) -> tuple[int, int]:
    """(ready, in flight) on the ``celery`` queue."""
    pipe = raw.pipeline(transaction=False)
    for step in ("", f"{SEP}3", f"{SEP}6", f"{SEP}9"):
        pipe.llen(f"{prefix}celery{step}")
    if package == "celery":
        pipe.hlen(f"{prefix}unacked")
    else:
        pipe.zcard(f"{prefix}_celeriac.leases.celery")
    *ready, flight = pipe.execute()
    return sum(ready), flight


def measure_drain(raw: redis.Redis, prefix: str, package: str, total: int,
                  timeout: float) -> float:
    deadline = time.monotonic() + timeout
    start = left = None
    while time.monotonic() < deadline:
        ready, flight = pending(raw, prefix, package)
        now = time.perf_counter()
        if start is None and ready < total:
            start, left = now, ready + flight
        if start is not None and ready == 0 and flight == 0:
            return (left or total) / max(now - start, 1e-9)
        time.sleep(0.005)
    raise RuntimeError(f"drain did not finish within {timeout:.0f}s")


def run_setup(name: str, args: argparse.Namespace, workdir: Path,
              raw: redis.Redis) -> Result:
    package, tails = SETUPS[name]
    prefix = f"bench-{uuid.uuid4().hex[:10]}:"
    env = {**os.environ, "BENCH_URL": args.url, "BENCH_PREFIX": prefix,
           "PYTHONPATH": os.pathsep.join([str(workdir), os.environ.get("PYTHONPATH", "")])}
    os.environ.update(BENCH_URL=args.url, BENCH_PREFIX=prefix)
    result, procs = Result(name, package), []
    try:
        client = load_client(workdir, package)
        client.noop.delay()  # connect, declare
        raw.delete(f"{prefix}celery")
        started = time.perf_counter()
        last = None
        for _ in range(args.tasks):
            last = client.noop.delay()
        result.enqueue = args.tasks / (time.perf_counter() - started)
        client.app.close()
        procs = start_workers(package, tails, workdir, env)
        sampler = MemorySampler([p.pid for p in procs], interval=0.05)
        sampler.start()
        result.drain = measure_drain(raw, prefix, package, args.tasks, args.timeout)
        assert last is not None
        fresh = load_client(workdir, package)
        fresh.noop.AsyncResult(last.id).get(timeout=30)
        for _ in range(20):
            fresh.noop.delay().get(timeout=10)
        samples = []
        for _ in range(args.latency):
            t0 = time.perf_counter()
            fresh.noop.delay().get(timeout=10)
            samples.append((time.perf_counter() - t0) * 1000)
        samples.sort()
        result.p50_ms = statistics.median(samples)
        result.p99_ms = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
        sampler.stop()
        result.rss_mb = sampler.peak_rss_kib / 1024
        fresh.app.close()
    finally:
        stop_processes(procs)
        keys = list(raw.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 1000):
            raw.delete(*keys[i:i + 1000])
    return result


# -- reporting ------------------------------------------------------------------------
def medians(results: list[Result]) -> list[Result]:
    """One result per setup (first-seen order): the median of each metric over rounds."""
    by_setup: dict[str, list[Result]] = {}
    for r in results:
        by_setup.setdefault(r.setup, []).append(r)
    out = []
    for name, runs in by_setup.items():
        out.append(Result(name, runs[0].package, *(
            statistics.median(getattr(r, metric) for r in runs)
            for metric in ("enqueue", "drain", "p50_ms", "p99_ms", "rss_mb"))))
    return out


def table(results: list[Result]) -> str:
    lines = [f"{'setup':<22}{'enqueue/s':>11}{'drain/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
             f"{'RSS MB':>9}"]
    for r in results:
        lines.append(f"{r.setup:<22}{r.enqueue:>11,.0f}{r.drain:>10,.0f}{r.p50_ms:>9.2f}"
                     f"{r.p99_ms:>9.2f}{r.rss_mb:>9.1f}")
    return "\n".join(lines)


def comparison(results: list[Result]) -> str:
    ours = [r for r in results if r.package == "celeriac"]
    theirs = [r for r in results if r.package == "celery"]
    if not ours or not theirs:
        return ""
    best_drain = max(ours, key=lambda r: r.drain)
    c_drain = max(theirs, key=lambda r: r.drain)
    c_enq, o_enq = max(r.enqueue for r in theirs), max(r.enqueue for r in ours)
    c_rss = min(r.rss_mb for r in theirs)
    rows = [
        f"drain: celeriac best {best_drain.drain:,.0f}/s ({best_drain.setup}) vs Celery best "
        f"{c_drain.drain:,.0f}/s ({c_drain.setup}): {best_drain.drain / c_drain.drain:.1f}x "
        "(target >= 10x)",
        f"enqueue: {o_enq:,.0f}/s vs {c_enq:,.0f}/s: {o_enq / c_enq:.1f}x (target >= 5x)",
        f"latency ({best_drain.setup}): p50 {best_drain.p50_ms:.2f} ms (target <= 1), "
        f"p99 {best_drain.p99_ms:.2f} ms (target <= 3); Celery best p50 "
        f"{min(r.p50_ms for r in theirs):.2f} ms",
        f"RSS ({best_drain.setup}): {best_drain.rss_mb:.1f} MB vs Celery's smallest "
        f"{c_rss:.1f} MB (target: no higher)",
    ]
    return "\n".join(rows)


def machine(load_before: float) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    import celery

    import celeriac

    info = redis.Redis.from_url("redis://127.0.0.1:6379").info("server")
    return (f"{os.cpu_count()} cores ({cpu}), {int(mem) // 1024 // 1024} GiB RAM, "
            f"Linux {platform.release()}, Python {platform.python_version()}, "
            f"Redis {info['redis_version']} on loopback, celery {celery.__version__}, "
            f"celeriac {celeriac.__version__}, 1-minute load average {load_before:.2f} before "
            f"the run and {os.getloadavg()[0]:.2f} after")


def chart(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.setup for r in results]
    colors = ["#c0504d" if r.package == "celery" else "#4f81bd" for r in results]
    metrics = [("enqueue (tasks/s, higher is better)", [r.enqueue for r in results]),
               ("drain (tasks/s, higher is better)", [r.drain for r in results]),
               ("round trip p50 / p99 (ms, lower is better)", None),
               ("peak worker RSS (MB, lower is better)", [r.rss_mb for r in results])]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    for ax, (title, values) in zip(axes.flat, metrics, strict=True):
        if values is None:
            xs = range(len(names))
            ax.bar([x - 0.2 for x in xs], [r.p50_ms for r in results], 0.4, color=colors,
                   label="p50")
            ax.bar([x + 0.2 for x in xs], [r.p99_ms for r in results], 0.4, color=colors,
                   alpha=0.5, label="p99")
            ax.legend()
        else:
            ax.bar(names, values, color=colors)
        ax.set_title(title)
        ax.set_xticks(range(len(names)), names, rotation=25, ha="right", fontsize=8)
    fig.suptitle("celeriac (blue) vs Celery 5.7 (red) on Redis, 2 cores")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


NOTES = """\
### How to read this

* Both sides store results in Redis (`backend=redis://...`) and acknowledge
  every message. Celery acknowledges before running (its default), celeriac
  after (at-least-once), so celeriac does more work per task.
* Both clients are configured like their workers (Redis broker and Redis
  result backend); `delay()` itself only publishes on either side.
* Drain starts at the first message taken and ends when nothing is ready or
  in flight; worker start-up is excluded for both.
* The best setup is picked by drain rate; latency and RSS are reported for it.
* `bench/redis_profile.py` profiles the celeriac side (the `delay()` path, a
  worker draining) and measures the batching ceiling: settling each message
  with its own result write and ack, or one `set_many` + one `ack` per
  receive batch.
"""


def write_report(results: list[Result], output: str, facts: str, args: argparse.Namespace
                 ) -> None:
    """The chart, and this script's section of RESULTS.md (other sections are kept)."""
    chart(results, HERE / "redis_vs_celery.png")
    section = (
        "## celeriac vs Celery 5.7 on Redis (`bench/redis_vs_celery.py`)\n\n"
        f"Produced by `python bench/redis_vs_celery.py --write` ({args.tasks:,} no-op tasks, "
        f"{args.latency} round trips, median of {args.rounds} round(s) per setup), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n\n"
        f"Machine: {facts}.\n\n"
        "The machine was shared with other test runs, so absolute numbers are noisy; "
        "every setup ran in the same session against the same Redis.\n\n"
        f"```\n{output}\n```\n\n![bar chart](redis_vs_celery.png)\n\n" + NOTES)
    results_md = HERE / "RESULTS.md"
    old = results_md.read_text() if results_md.exists() else "# Benchmark results\n"
    results_md.write_text(replace_section(old, "redis_vs_celery.py", section, after_title=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--latency", type=int, default=500)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--setups", default=",".join(SETUPS))
    parser.add_argument("--timeout", type=float, default=240.0)
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every setup this many times; report medians")
    parser.add_argument("--write", action="store_true", help="write RESULTS.md and the PNG")
    args = parser.parse_args()
    raw = redis.Redis.from_url(args.url)
    load_before = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory(prefix="celeriac-bench-") as tmp:
        workdir = Path(tmp)
        for package in ("celery", "celeriac"):
            (workdir / f"bench_{package}.py").write_text(TASKS.format(package=package))
        sys.path.insert(0, str(workdir))
        for round_no in range(1, args.rounds + 1):
            for name in args.setups.split(","):
                t0 = time.monotonic()
                try:
                    results.append(run_setup(name, args, workdir, raw))
                except Exception as exc:
                    print(f"{name}: FAILED: {exc!r}", flush=True)
                    for log in workdir.glob("worker-*.log"):
                        print(log.read_text()[-2000:])
                    continue
                print(f"round {round_no}, {name}: done in {time.monotonic() - t0:.0f}s",
                      flush=True)
    results = medians(results)
    facts = machine(load_before)
    output = f"{table(results)}\n\n{comparison(results)}"
    print(f"\n{facts}\n\n{output}")
    if args.write:
        write_report(results, output, facts, args)


if __name__ == "__main__":
    main()
