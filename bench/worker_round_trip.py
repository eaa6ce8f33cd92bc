"""``delay().get()`` round trips on loopback Redis, two WORKER trees compared in one run.

    .venv/bin/python bench/worker_round_trip.py --base /tmp/base/src --chunks 40 --n 200

Starts two default ``celeriac -A peerapps.celery_compat worker`` processes at once,
one importing celeriac from this tree (``this``) and one from ``--base`` (e.g. an
extracted ``git archive main src``), each under its own key prefix, and one client of
this tree per worker. The clients make sequential ``incr.delay(key).get()`` calls in
alternating chunks of ``--n`` (so a loaded machine's drift hits both workers alike);
printed per worker: wall p50/p90/p99 over every call, and the worker's process tree
CPU (supervisor and children, from /proc) per call. Compare the ratios within one
run. Workers are stopped by PID and the run's keys deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from benchlib import stop_processes, tree_cpu_seconds

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
BIN = Path(sys.executable).parent

CLIENT = r"""
import json, sys, time
from peerapps.celery_compat import incr, app
key = sys.argv[1]
for _ in range(50):
    incr.delay(key).get(timeout=30)
for line in sys.stdin:
    samples = []
    for _ in range(int(line)):
        t0 = time.perf_counter()
        incr.delay(key).get(timeout=30)
        samples.append(time.perf_counter() - t0)
    print(json.dumps(samples), flush=True)
app.close()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="the other tree's src directory")
    parser.add_argument("--url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--chunks", type=int, default=40, help="chunks per worker")
    parser.add_argument("--n", type=int, default=200, help="calls per chunk")
    args = parser.parse_args()
    trees = {"base": str(Path(args.base).resolve()), "this": str(SRC)}
    workdir = Path(tempfile.mkdtemp(prefix="celeriac-workerrt-"))
    workers: dict[str, subprocess.Popen[bytes]] = {}
    clients: dict[str, subprocess.Popen[str]] = {}
    prefixes: dict[str, str] = {}
    try:
        for name, src in trees.items():
            prefix = prefixes[name] = f"workerrt-{uuid.uuid4().hex[:10]}:"
            env = {**os.environ, "BENCH_URL": args.url, "BENCH_PREFIX": prefix,
                   "BENCH_PACKAGE": "celeriac"}
            log = workdir / f"{name}.log"
            with log.open("wb") as out:
                workers[name] = subprocess.Popen(
                    [str(BIN / "celeriac"), "-A", "peerapps.celery_compat", "worker"],
                    cwd=workdir, env={**env, "PYTHONPATH": f"{src}{os.pathsep}{HERE}"},
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + 60
            while b"ready." not in log.read_bytes() and time.monotonic() < deadline:
                time.sleep(0.2)
            clients[name] = subprocess.Popen(
                [sys.executable, "-c", CLIENT, f"{prefix}count"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, text=True,
                env={**env, "PYTHONPATH": f"{SRC}{os.pathsep}{HERE}"})
        samples: dict[str, list[float]] = {name: [] for name in trees}
        cpu = dict.fromkeys(trees, 0.0)
        for chunk in range(args.chunks):
            for name in (["base", "this"] if chunk % 2 == 0 else ["this", "base"]):
                client = clients[name]
                assert client.stdin is not None and client.stdout is not None
                before = tree_cpu_seconds([workers[name].pid])
                client.stdin.write(f"{args.n}\n")
                client.stdin.flush()
                samples[name] += json.loads(client.stdout.readline())
                cpu[name] += tree_cpu_seconds([workers[name].pid]) - before
        for name, got in samples.items():
            got.sort()
            count = len(got)
            print(f"{name}: {count} calls, p50 {got[count // 2] * 1e3:.3f} ms, "
                  f"p90 {got[int(count * 0.9)] * 1e3:.3f} ms, "
                  f"p99 {got[int(count * 0.99)] * 1e3:.3f} ms, "
                  f"worker CPU {cpu[name] / count * 1e6:.0f} us/call")
    finally:
        for client in clients.values():
            if client.stdin is not None:
                client.stdin.close()
            try:
                client.wait(30)
            except subprocess.TimeoutExpired:
                client.kill()
        stop_processes(workers.values())
        raw = redis.Redis.from_url(args.url)
        for prefix in prefixes.values():
            keys = list(raw.scan_iter(match=f"{prefix}*", count=1000))
            for start in range(0, len(keys), 500):
                raw.delete(*keys[start:start + 500])


if __name__ == "__main__":
    main()
