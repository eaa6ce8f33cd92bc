"""Scale-model measurements for docs/scaling.md: one Redis, a Redis Cluster, replica waits.

Starts its own servers on free loopback ports (``tests/redisnodes.py``: one
master + one replica, and a Redis Cluster of 3 masters + 3 replicas), so nothing
shared is touched, and measures, for a no-op task with its result stored:

1. **Redis work per task** on one Redis and on the cluster: a real ``celeriac
   worker`` process (``-P solo``) drains N tasks published by this process with
   ``delay()``; the servers' ``INFO commandstats`` and ``INFO cpu`` before and
   after give the commands per task (top-level calls and those run inside the Lua
   scripts) and the server CPU per task. One shard's main thread does
   ``1e6 / (server CPU µs per task)`` tasks a second at most: the ceiling of one
   queue, which lives on one shard.
2. **One worker process's rate**: N / (last completion - first publish), and the
   worker's CPU per task (``/proc``, the whole process tree).
3. **The cost of ``wait_for_replicas: 1``**: sequential ``delay()`` calls per
   second to a master with one replica, without and with the option.

Run::

    python bench/cluster_scaling.py            # N = 3,000: about two minutes
    python bench/cluster_scaling.py --write    # also writes its section of RESULTS.md

It prints a table; numbers on a shared 2-core machine are noisy (the load
average is printed), ratios between the setups less so.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))

import redis  # noqa: E402
from benchlib import replace_section, start_process, stop_process, tree_cpu_seconds  # noqa: E402

import redisnodes  # noqa: E402

APP = '''
from celeriac import Celery

app = Celery("scaling", broker={url!r}, backend={url!r})
app.conf.broker_transport_options = {options!r}
app.conf.result_backend_transport_options = {options!r}


@app.task(name="scaling.noop")
def noop(i):
    return i
'''


def server_totals(ports: list[int]) -> dict[str, float]:
    """Summed over ``ports``: commands run (those inside Lua scripts included, as
    ``INFO commandstats`` counts them) and the servers' CPU seconds."""
    calls = cpu = 0.0
    for port in ports:
        client = redis.Redis(port=port)
        for name, row in client.info("commandstats").items():
            if not name.startswith(("cmdstat_info", "cmdstat_cluster", "cmdstat_command")):
                calls += row["calls"]
        info = client.info("cpu")
        cpu += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        client.close()
    return {"calls": calls, "cpu": cpu}


def evalsha_calls(ports: list[int]) -> float:
    total = 0.0
    for port in ports:
        client = redis.Redis(port=port)
        for name, row in client.info("commandstats").items():
            if name in ("cmdstat_evalsha", "cmdstat_eval"):
                total += row["calls"]
        client.close()
    return total


def drain(workdir: Path, url: str, ports: list[int], n: int) -> dict[str, float]:
    """A solo worker drains ``n`` tasks published with ``delay()``; the work it took."""
    prefix = f"scaling-{uuid.uuid4().hex[:8]}:"
    module = f"scaling_{uuid.uuid4().hex[:8]}"
    (workdir / f"{module}.py").write_text(textwrap.dedent(APP.format(
        url=url, options={"global_keyprefix": prefix})))
    sys.path.insert(0, str(workdir))
    mod = __import__(module)
    env = {**os.environ, "PYTHONPATH": f"{workdir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    worker = start_process([sys.executable, "-m", "celeriac", "-A", module, "worker", "-P",
                            "solo", "-l", "WARNING"], workdir, env,
                           workdir / f"{module}.log")
    try:
        mod.noop.delay(-1).get(timeout=60)  # started and warm
        time.sleep(1.0)
        before, before_eval = server_totals(ports), evalsha_calls(ports)
        cpu_before = tree_cpu_seconds([worker.pid])
        started = time.monotonic()
        for i in range(n):
            mod.noop.delay(i)
        publish_s = time.monotonic() - started
        broker = mod.app.broker
        while True:
            stats = broker.stats("celery")
            if stats.ready + stats.leased + stats.delayed == 0:
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        worker_cpu = tree_cpu_seconds([worker.pid]) - cpu_before
        after, after_eval = server_totals(ports), evalsha_calls(ports)
    finally:
        stop_process(worker)
        mod.app.close()
    return {
        "commands": (after["calls"] - before["calls"]) / n,
        "scripts": (after_eval - before_eval) / n,
        "server_us": (after["cpu"] - before["cpu"]) / n * 1e6,
        "rate": n / elapsed,
        "publish_rate": n / publish_s,
        "worker_us": worker_cpu / n * 1e6,
    }


def replica_wait_cost(workdir: Path, port: int, n: int) -> dict[str, float]:
    from celeriac import Celery

    out = {}
    for label, extra in (("async", {}), ("wait1", {"wait_for_replicas": 1})):
        app = Celery("waits", broker=f"redis://127.0.0.1:{port}/0")
        app.conf.broker_transport_options = {"global_keyprefix": f"w-{label}:", **extra}

        @app.task(name="scaling.noop", shared=False)
        def noop(i: int) -> int:
            return i

        noop.delay(0)
        started = time.perf_counter()
        for i in range(n):
            noop.delay(i)
        out[label] = (time.perf_counter() - started) / n * 1e6
        app.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=3000, help="tasks per drain")
    parser.add_argument("--write", action="store_true", help="write RESULTS.md's section")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cluster-scaling-"))
    load_before = os.getloadavg()[0]
    single = redisnodes.start_sentinels(root / "single", count=0)
    cluster = redisnodes.start_cluster(root / "cluster")
    try:
        rows = {
            "one Redis": drain(root, f"redis://127.0.0.1:{single.master_port}/0",
                               [single.master_port], args.n),
            "Redis Cluster (3+3)": drain(root, cluster.url, cluster.masters(), args.n),
        }
        waits = replica_wait_cost(root, single.master_port, args.n)
    finally:
        cluster.stop()
        single.stop()
    load_after = os.getloadavg()[0]
    lines = [f"{'setup':<22}{'cmds/task':>10}{'scripts/task':>13}{'server µs/task':>16}"
             f"{'1-shard ceiling/s':>19}{'worker tasks/s':>16}{'worker µs/task':>16}"
             f"{'delay()/s':>11}"]
    for name, row in rows.items():
        lines.append(f"{name:<22}{row['commands']:>10.1f}{row['scripts']:>13.1f}"
                     f"{row['server_us']:>16.0f}{1e6 / row['server_us']:>19,.0f}"
                     f"{row['rate']:>16,.0f}{row['worker_us']:>16,.0f}"
                     f"{row['publish_rate']:>11,.0f}")
    lines.append("")
    lines.append(f"delay() to a master with one replica: {waits['async']:.0f} µs without "
                 f"wait_for_replicas, {waits['wait1']:.0f} µs with wait_for_replicas=1 "
                 f"(+{waits['wait1'] - waits['async']:.0f} µs, "
                 f"{waits['wait1'] / waits['async']:.2f}x)")
    text = "\n".join(lines)
    print(text)
    print(f"\nload average {load_before:.2f} before, {load_after:.2f} after; n={args.n}")
    if args.write:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        body = (f"## Scale model inputs (`bench/cluster_scaling.py`)\n\n"
                f"{stamp}, {args.n} no-op tasks with results, one `-P solo` worker process, "
                f"{os.cpu_count()} cores, Python {platform.python_version()}, private "
                f"redis-server 7.0 processes on loopback; 1-minute load average "
                f"{load_before:.2f} before, {load_after:.2f} after (a shared machine).\n\n"
                f"```\n{text}\n```\n\nHow these figures are used: "
                "[docs/scaling.md](../docs/scaling.md).\n")
        results = BENCH / "RESULTS.md"
        results.write_text(replace_section(results.read_text(), "cluster_scaling.py", body))


if __name__ == "__main__":
    main()
