"""Benchmark: celeriac against real Celery 5.7 on the same RabbitMQ, in one run.

For each setup (a fresh RabbitMQ virtual host, made and deleted with ``rabbitmqctl``):

* **enqueue**: ``incr.delay()`` called one at a time, N times, by a client app in this
  process (celeriac: publisher confirms always on; Celery: its default, confirms off,
  and ``confirm_publish=True`` for the like-for-like figure);
* **drain**: the worker is started on the filled queue from the CLI; every task does
  one Redis ``INCR`` (the same work on both sides); the clock runs from the first
  increment to the N-th (the counter is read every 10 ms).

Targets (issue 13, reported, never asserted): drain >= 3x Celery's best setup, enqueue
>= 2x Celery's enqueue with confirms on. Results go to stdout; ``--write`` replaces the
RabbitMQ section of ``bench/RESULTS.md``. Needs RabbitMQ on 5672 (``rabbitmqctl`` on
PATH) and Redis on 6379 (db 13, keys under a unique prefix, deleted afterwards).

Usage::

    .venv/bin/python bench/amqp_vs_celery.py --tasks 5000 --write
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import redis
from benchlib import replace_section, stop_processes

HERE = Path(__file__).resolve().parent
REDIS = "redis://127.0.0.1:6379/13"

TASKS = '''\
"""Benchmark tasks ({package} side)."""
import os

import redis
from {package} import Celery

app = Celery("bench_amqp_{package}", broker=os.environ["BENCH_BROKER"])
app.conf.task_ignore_result = True
app.conf.broker_transport_options = {transport!r}
_redis = redis.Redis.from_url(os.environ["BENCH_REDIS"])
KEY = os.environ["BENCH_KEY"]


@app.task(name="bench.incr")
def incr():
    _redis.incr(KEY)
'''


@dataclass(frozen=True)
class Setup:
    name: str
    package: str
    worker: list[str]
    transport: dict[str, object]


SETUPS = [
    Setup("celery-prefork-c2-prefetch64", "celery",
          ["-P", "prefork", "-c", "2", "--prefetch-multiplier", "64", "--without-mingle",
           "--without-gossip", "--without-heartbeat"], {}),
    Setup("celery-prefork-c2-confirms", "celery",
          ["-P", "prefork", "-c", "2", "--prefetch-multiplier", "64", "--without-mingle",
           "--without-gossip", "--without-heartbeat"], {"confirm_publish": True}),
    Setup("celeriac-default", "celeriac", ["-c", "2"], {}),
    Setup("celeriac-threads-c8", "celeriac", ["-P", "threads", "-c", "8"], {}),
]


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=300)


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_setup(setup: Setup, tasks: int, workdir: Path) -> dict[str, float]:
    vhost = f"celeriac-bench-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    key = f"bench-amqp-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "BENCH_BROKER": f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
           "BENCH_REDIS": REDIS, "BENCH_KEY": key,
           "PYTHONPATH": f"{workdir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    module = f"bench_amqp_{setup.package}_{uuid.uuid4().hex[:6]}"
    (workdir / f"{module}.py").write_text(TASKS.format(package=setup.package,
                                                       transport=setup.transport))
    os.environ.update({k: env[k] for k in ("BENCH_BROKER", "BENCH_REDIS", "BENCH_KEY")})
    client = load(workdir / f"{module}.py", module)
    counter = redis.Redis.from_url(REDIS)
    try:
        client.incr.delay()  # connect and declare outside the clock
        started = time.perf_counter()
        for _ in range(tasks):
            client.incr.delay()
        enqueue = tasks / (time.perf_counter() - started)
        cli = ([sys.executable, "-m", "celery"] if setup.package == "celery"
               else [sys.executable, "-m", "celeriac"])
        log = open(workdir / f"{module}.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen([*cli, "-A", module, "worker", "-l", "WARNING", *setup.worker],
                                cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            while int(counter.get(key) or 0) < 1:
                time.sleep(0.005)
            first = time.perf_counter()
            deadline = first + 600
            while int(counter.get(key) or 0) < tasks + 1 and time.perf_counter() < deadline:
                time.sleep(0.01)
            done = int(counter.get(key) or 0)
            drain = (done - 1) / (time.perf_counter() - first)
        finally:
            stop_processes([proc])
            log.close()
        return {"enqueue": enqueue, "drain": drain, "done": done - 1}
    finally:
        closer = getattr(client.app, "close", None)
        if closer is not None:
            closer()
        counter.delete(key)
        rabbitmqctl("delete_vhost", vhost)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--setups", default=",".join(s.name for s in SETUPS))
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    chosen = [s for s in SETUPS if s.name in args.setups.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for setup in chosen:
            result = run_setup(setup, args.tasks, Path(tmp))
            rows.append((setup.name, result))
            print(f"{setup.name:32} enqueue {result['enqueue']:8.0f}/s   "
                  f"drain {result['drain']:8.0f}/s   ({result['done']:.0f} tasks)", flush=True)
    best_celery = max((r["drain"] for n, r in rows if n.startswith("celery")), default=0.0)
    celery_confirms = next((r["enqueue"] for n, r in rows if n == "celery-prefork-c2-confirms"),
                           0.0)
    lines = ["| setup | enqueue/s | drain/s |", "|---|---|---|"]
    lines += [f"| {n} | {r['enqueue']:.0f} | {r['drain']:.0f} |" for n, r in rows]
    for name, result in rows:
        if name.startswith("celeriac") and best_celery and celery_confirms:
            lines.append(f"\n{name}: drain {result['drain'] / best_celery:.2f}x Celery's best, "
                         f"enqueue {result['enqueue'] / celery_confirms:.2f}x Celery with "
                         "confirms")
    body = "\n".join(lines) + (
        f"\n\n{args.tasks} tasks per setup, each one Redis INCR; "
        f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the "
        "end (a shared 2-core machine: compare setups of one run only).\n")
    print(body)
    if args.write:
        results = HERE / "RESULTS.md"
        text = results.read_text() if results.exists() else "# Benchmark results\n"
        results.write_text(replace_section(text, "RabbitMQ: celeriac vs Celery", body))


if __name__ == "__main__":
    main()
