"""``delay().get()`` round trips on loopback Redis: two source trees compared in one run.

    .venv/bin/python bench/get_round_trip.py --base /tmp/base/src --n 1000 --rounds 3

Starts one ``celeriac -A peerapps.celery_compat worker`` (celeriac's defaults, the
``celeriac-default`` setup of ``bench/peers.py``: its app, task and key prefix
scheme) and then, alternating, client processes importing celeriac from this tree
(``this``) and from ``--base`` (``base``, e.g. an extracted ``git archive main src``).
Each client makes 20 untimed and ``--n`` timed sequential ``incr.delay(key).get()``
calls and reports wall p50/p99 and its CPU per call (``time.process_time()``: the
whole client process, every thread). Ratios within one run are what to compare.
The worker is stopped by PID and the run's keys are deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
BIN = Path(sys.executable).parent

CLIENT = r"""
import json, sys, time
from peerapps.celery_compat import incr, app
n, key = int(sys.argv[1]), sys.argv[2]
for _ in range(20):
    incr.delay(key).get(timeout=30)
samples = []
cpu0 = time.process_time()
for _ in range(n):
    t0 = time.perf_counter()
    incr.delay(key).get(timeout=30)
    samples.append(time.perf_counter() - t0)
cpu = time.process_time() - cpu0
samples.sort()
print(json.dumps({"p50": samples[n // 2] * 1e3, "p99": samples[int(n * 0.99)] * 1e3,
                  "cpu_us": cpu / n * 1e6}))
app.close()
"""


def run_client(src: str, env: dict[str, str], n: int, key: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CLIENT, str(n), key], check=True,
                         capture_output=True, text=True, timeout=600,
                         env={**env, "PYTHONPATH": f"{src}{os.pathsep}{HERE}"})
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="the other tree's src directory")
    parser.add_argument("--url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    prefix = f"getrt-{uuid.uuid4().hex[:10]}:"
    env = {**os.environ, "BENCH_URL": args.url, "BENCH_PREFIX": prefix,
           "BENCH_PACKAGE": "celeriac", "PYTHONPATH": f"{SRC}{os.pathsep}{HERE}"}
    workdir = Path(tempfile.mkdtemp(prefix="celeriac-getrt-"))
    log = (workdir / "worker.log").open("wb")
    worker = subprocess.Popen([str(BIN / "celeriac"), "-A", "peerapps.celery_compat", "worker"],
                              cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    raw = redis.Redis.from_url(args.url)
    try:
        time.sleep(3)
        trees = {"this": str(SRC), "base": str(Path(args.base).resolve())}
        results: dict[str, list[dict[str, float]]] = {"this": [], "base": []}
        for round_no in range(args.rounds):
            order = ["base", "this"] if round_no % 2 == 0 else ["this", "base"]
            for name in order:
                got = run_client(trees[name], env, args.n, f"{prefix}count")
                results[name].append(got)
                print(f"round {round_no + 1} {name}: p50 {got['p50']:.3f} ms, "
                      f"p99 {got['p99']:.3f} ms, client CPU {got['cpu_us']:.0f} us/call",
                      flush=True)
        for name, rows in results.items():
            mid = sorted(rows, key=lambda r: r["p50"])[len(rows) // 2]
            print(f"{name}: median round p50 {mid['p50']:.3f} ms p99 {mid['p99']:.3f} ms "
                  f"CPU {sorted(r['cpu_us'] for r in rows)[len(rows) // 2]:.0f} us/call")
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        keys = list(raw.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            raw.delete(*keys[start:start + 500])


if __name__ == "__main__":
    main()
