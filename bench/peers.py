"""Benchmark: celeriac against every peer (Celery 5.7, Dramatiq, Huey, arq, RQ) in one run.

Usage::

    .venv/bin/python bench/peers.py --quick     # one round, 2,000 tasks, < 3 minutes
    .venv/bin/python bench/peers.py             # 3 rounds, 20,000 tasks, every candidate

Every system runs the same task (``incr(key)``: one Redis ``INCR``, see
``bench/peerapps``) on the same Redis (database 14 by default, one unique key
prefix per setup run, a lock so two runs never share it), with worker
processes started from each system's own CLI. For each setup, in order:

1. **enqueue**: a fresh client process makes 100 untimed, then N timed,
   sequential single enqueue calls (``delay()`` or its equivalent); celeriac
   setups then time N raw redis-py ``LPUSH`` calls of the same message bytes
   in the same process, the reference for ``delay()``;
2. the N + 100 queued tasks are moved aside (``RENAME`` of the ready queue;
   an ``UPDATE`` of the queue name on SQLite), the workers start, and a second
   client trickles warm-up tasks (on another counter) until 30 ran and the
   worker tree's CPU is quiet, so start-up and warm-up are excluded;
3. **drain**: the backlog is put back in one step (then a few more warm-up
   tasks are sent at once, which wakes workers that wait for a publisher's
   wake-up token or poll); the clock starts at the
   first ``INCR`` of the drain counter and stops when it reaches N + 100
   (rate = tasks counted in that window / its length); the worker tree's CPU
   time over the window gives **CPU per task**;
4. **round trip**: 20 untimed, then K timed ``delay().get()`` equivalents
   (fewer if they take over 20 s: systems that poll for results), p50 and
   p99 by nearest rank;
5. **RSS / PSS**: peak over the drain and round trips of the worker tree's
   sum from ``/proc/<pid>/smaps_rollup``, sampled every 0.25 s;
6. workers get their graceful stop signal (by PID), keys are deleted.

Setups (``bench/peers_systems.py``) run in a different order each round
(rotated; celeriac's default always before its other setups); each system's
best is its setup with the highest median drain. Results: stdout,
``bench/PEERS.md``, ``bench/peers.png`` and a section of ``bench/RESULTS.md``
(``--no-write`` skips the files).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import selectors
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from benchlib import (
    MemorySampler,
    cpu_seconds,
    process_tree,
    service_up,
    start_process,
    stop_processes,
    tree_cpu_seconds,
    wait_for,
)
from peers_output import commit, machine, report, versions
from peers_report import Run, percentile
from peers_systems import BY_NAME, HERE, SETUPS, Setup

ENQUEUE_WARM, TRICKLE_NEED, TRICKLE_EVERY, RT_WARM, RT_TIMEOUT = 100, 30, 0.02, 20, 10.0
RT_BUDGET = 20.0  # seconds of timed round trips at most (polling systems take 50-500 ms each)
LOCK = "celeriac-peers-bench:lock"


class Client:
    """One ``peerapps.client`` process for a setup (see that module for the protocol)."""

    def __init__(self, setup: Setup, workdir: Path, env: dict[str, str], name: str) -> None:
        self.proc = start_process([setup.python(), "-m", "peerapps.client", setup.module],
                                  workdir, env, workdir / f"{name}.log", stdout=subprocess.PIPE,
                                  stdin=subprocess.PIPE, text=True)
        self.selector = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self.selector.register(self.proc.stdout, selectors.EVENT_READ)
        self.reply(120)  # {"ready": true} once the app module imported

    def reply(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        if not self.selector.select(timeout):
            raise TimeoutError(f"client gave no answer within {timeout:.0f}s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"client exited (code {self.proc.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"client: {answer['error']}")
        return answer

    def call(self, wait: float = 600, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self.reply(wait)

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write('{"op": "quit"}\n')
                self.proc.stdin.close()
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                stop_processes([self.proc], grace=5)
        self.selector.close()


class Backlog:
    """Moves a setup's queued messages aside while its workers start, then back at once."""

    SQLITE_QUEUE, STAGED = "celery", "bench-staged"

    def __init__(self, setup: Setup, raw: redis.Redis, prefix: str, workdir: Path) -> None:
        self.setup, self.raw, self.workdir = setup, raw, workdir
        self.keys = setup.queue_keys(prefix)

    def _size(self, key: str) -> int:
        kind = self.raw.type(key)
        return int({b"list": self.raw.llen, b"zset": self.raw.zcard}.get(
            kind, lambda _key: 0)(key))

    def _sqlite(self, src: str, dst: str) -> int:
        with sqlite3.connect(self.workdir / "celeriac.sqlite3", timeout=60) as db:
            return db.execute("UPDATE messages SET queue = ? WHERE queue = ?", (dst, src)).rowcount

    def sample(self) -> str | None:
        """One queued message as stored (the raw LPUSH reference pushes these bytes)."""
        if not self.keys or self.raw.type(self.keys[0]) != b"list":
            return None
        value = self.raw.lindex(self.keys[0], 0)
        return None if value is None else value.decode()

    def hide(self, expected: int) -> None:
        if not self.keys:
            moved = self._sqlite(self.SQLITE_QUEUE, self.STAGED)
        else:
            moved = 0
            for key in self.keys:
                moved += self._size(key)
                self.raw.rename(key, key + ":bench-staged")
        if moved != expected:
            raise RuntimeError(f"{moved} messages queued, {expected} enqueued")

    def release(self) -> None:
        if not self.keys:
            self._sqlite(self.STAGED, self.SQLITE_QUEUE)
            return
        pipe = self.raw.pipeline(transaction=True)
        for key in self.keys:
            pipe.rename(key + ":bench-staged", key)
        pipe.execute()

    def left(self) -> int:
        if not self.keys:
            with sqlite3.connect(self.workdir / "celeriac.sqlite3", timeout=60) as db:
                return int(db.execute("SELECT count(*) FROM messages").fetchone()[0])
        return sum(self._size(k) + self._size(k + ":bench-staged") for k in self.keys)


def counter(raw: redis.Redis, key: str) -> int:
    return int(raw.get(key) or 0)


def wait_warm(raw: redis.Redis, key: str, roots: list[int], timeout: float = 60) -> str:
    """Until TRICKLE_NEED warm-up tasks ran and two 0.3 s windows used < 35 % of a core
    (start-up done); answers a note when the tree never went that quiet."""
    started = time.monotonic()
    wait_for(lambda: counter(raw, key) >= TRICKLE_NEED, 90, "the warm-up tasks")
    quiet, last, deadline = 0, tree_cpu_seconds(roots), time.monotonic() + timeout
    while quiet < 2:
        if time.monotonic() > deadline:
            return f"workers still busy {timeout:.0f}s after warm-up"
        time.sleep(0.3)
        now = tree_cpu_seconds(roots)
        quiet, last = (quiet + 1 if now - last < 0.35 * 0.3 else 0), now
    return f"warm in {time.monotonic() - started:.1f}s"


def time_drain(raw: redis.Redis, key: str, total: int, pids: list[int], timeout: float,
               released: float) -> tuple[float, float, str]:
    """(tasks/s, CPU µs per task, note) from the first INCR of ``key`` to the ``total``-th;
    ``released``: when the backlog was put back (``perf_counter``)."""
    deadline = time.monotonic() + timeout
    while (first := counter(raw, key)) == 0:
        if time.monotonic() > deadline:
            raise TimeoutError("no task ran after the backlog was released")
        time.sleep(0.001)
    started, cpu0 = time.perf_counter(), cpu_seconds(pids)
    note = f"first task {(started - released) * 1000:.0f} ms after release"
    while (done := counter(raw, key)) < total:
        now = time.perf_counter()
        if time.monotonic() > deadline:
            raise TimeoutError(f"drain: {done} of {total} after {timeout:.0f}s")
        rate = (done - first) / (now - started) if done > first else 0
        time.sleep(min(0.01, max(0.001, (total - done) / rate / 4)) if rate else 0.002)
    seconds, cpu = time.perf_counter() - started, cpu_seconds(pids) - cpu0
    count = total - first
    return count / seconds, cpu / count * 1e6, note


def run_setup(setup: Setup, round_no: int, args: argparse.Namespace, raw: redis.Redis,
              root: Path) -> Run:
    prefix = f"peers-{uuid.uuid4().hex[:10]}:"
    workdir = root / f"{round_no}-{setup.name}"
    workdir.mkdir()
    env = {**os.environ, "BENCH_URL": args.url, "BENCH_PREFIX": prefix, "PYTHONPATH": str(HERE),
           "PYTHONUNBUFFERED": "1", **setup.env}
    run, total = Run(setup.name, setup.system, round_no), args.tasks + ENQUEUE_WARM
    drain_key, warm_key, rt_key = (f"{prefix}count:{k}" for k in ("drain", "warm", "rt"))
    workers: list[subprocess.Popen[Any]] = []
    client: Client | None = None
    sampler: MemorySampler | None = None
    backlog = Backlog(setup, raw, prefix, workdir)
    try:
        client = Client(setup, workdir, env, "client-enqueue")
        seconds = client.call(op="enqueue", warm=ENQUEUE_WARM, n=args.tasks, key=drain_key)
        run.enqueue = args.tasks / seconds["seconds"]
        payload = backlog.sample() if setup.system == "celeriac" else None
        if payload is not None:
            pushed = client.call(op="lpush", warm=ENQUEUE_WARM, n=args.tasks,
                                 key=f"{prefix}lpush", payload=payload)
            run.lpush = args.tasks / pushed["seconds"]
        client.close()
        backlog.hide(total)
        workers = [start_process(argv, workdir, env, workdir / f"worker-{i}.log")
                   for i, argv in enumerate(setup.commands(args.url, prefix), 1)]
        roots = [w.pid for w in workers]
        client = Client(setup, workdir, env, "client-drain")
        client.call(op="trickle", key=warm_key, interval=TRICKLE_EVERY)
        run.notes.append(wait_warm(raw, warm_key, roots))
        client.call(op="stop_trickle")
        sampler = MemorySampler(roots)
        sampler.start()
        pids = process_tree(roots)
        released = time.perf_counter()
        backlog.release()
        client.call(op="nudge", key=warm_key, n=2 * len(pids))
        run.drain, run.cpu_us, note = time_drain(raw, drain_key, total, pids, args.timeout,
                                                 released)
        run.notes.append(note)
        time.sleep(0.2)
        extra = counter(raw, drain_key) - total
        if extra:
            run.notes.append(f"{extra} tasks ran twice")
        if backlog.left():
            run.notes.append(f"{backlog.left()} messages left queued")
        samples = client.call(op="roundtrip", warm=RT_WARM, n=args.round_trips, key=rt_key,
                              timeout=RT_TIMEOUT, budget=RT_BUDGET)["ms"]
        if len(samples) < args.round_trips:
            run.notes.append(f"{len(samples)} round trips ({RT_BUDGET:.0f} s budget)")
        run.p50_ms, run.p99_ms = percentile(samples, 50), percentile(samples, 99)
        sampler.stop()
        run.rss_mb, run.pss_mb = sampler.peak_rss_kib / 1024, sampler.peak_pss_kib / 1024
    except Exception as exc:
        run.error = f"{type(exc).__name__}: {exc}"
        for log in sorted(workdir.glob("*.log")):
            print(f"--- {log.name} (last lines)\n{log.read_text(errors='replace')[-1500:]}",
                  file=sys.stderr)
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        if client is not None:
            client.close()
        stop_processes(workers, setup.stop_signal)
        delete_keys(raw, setup.cleanup_patterns(prefix))
    return run


# -- the run as a whole ------------------------------------------------------------------
def plan(names: list[str], rounds: int) -> list[list[str]]:
    """Round r runs the setups rotated by r places, celeriac's default always first among
    celeriac's Redis setups (so it never benefits from running after them)."""
    out = []
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        ours = [n for n in order if BY_NAME[n].system == "celeriac"]
        if "celeriac-default" in ours:
            slots = [i for i, n in enumerate(order) if BY_NAME[n].system == "celeriac"]
            ours.remove("celeriac-default")
            for i, name in zip(slots, ["celeriac-default", *ours], strict=True):
                order[i] = name
        out.append(order)
    return out


#: key patterns every setup's keys fall under (see Setup.cleanup_patterns)
ALL_PATTERNS = ("peers-*", "huey.*.peers*", "rq:*", "arq:*")


def delete_keys(raw: redis.Redis, patterns: list[str] | tuple[str, ...]) -> None:
    for pattern in patterns:
        keys = list(raw.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 1000):
            raw.delete(*keys[i:i + 1000])


def acquire_lock(raw: redis.Redis) -> str:
    """Take the database's lock; a lock left by a dead run on this host is taken over
    (and that run's keys deleted)."""
    token = f"{os.getpid()}@{platform.node()}:{uuid.uuid4().hex[:8]}"
    if raw.set(LOCK, token, nx=True, ex=4 * 3600):
        return token
    holder = (raw.get(LOCK) or b"").decode()
    pid, _, rest = holder.partition("@")
    dead = pid.isdigit() and not Path(f"/proc/{pid}").exists()
    if dead and rest.split(":")[0] == platform.node():
        print(f"# taking over the lock of a dead run ({holder}), deleting its keys",
              file=sys.stderr)
        delete_keys(raw, ALL_PATTERNS)
        raw.set(LOCK, token, ex=4 * 3600)
        return token
    raise SystemExit(f"another bench/peers.py run holds {LOCK} ({holder}) on this database; "
                     "wait for it, or pick another with --url")


def release_lock(raw: redis.Redis, token: str) -> None:
    if raw.get(LOCK) == token.encode():
        raw.delete(LOCK)


def foreign_keys(raw: redis.Redis) -> list[str]:
    """Keys with RQ's or arq's fixed prefixes that this run did not write."""
    return [k.decode() for pattern in ("rq:*", "arq:*")
            for k in raw.scan_iter(match=pattern, count=1000)]


def stop_on_signal(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 round, 2,000 tasks, 100 round trips, one setup per peer "
                        "(< 3 minutes)")
    parser.add_argument("--tasks", type=int, help="N (default 20,000; 2,000 with --quick)")
    parser.add_argument("--round-trips", type=int, help="K (default 1,000; 100 with --quick)")
    parser.add_argument("--rounds", type=int, help="repeats (default 3; 1 with --quick)")
    parser.add_argument("--setups", help="comma-separated setup names (default: all, or the "
                        "--quick ones); --list shows them")
    parser.add_argument("--list", action="store_true", help="list the setups and exit")
    parser.add_argument("--url", default="redis://127.0.0.1:6379/14",
                        help="Redis database the run owns (locked while it runs)")
    parser.add_argument("--timeout", type=float, default=300.0, help="drain timeout, seconds")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; do not write PEERS.md, peers.png, RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    if args.list:
        for s in SETUPS:
            print(f"{s.name:<26}{'quick ' if s.quick else '      '}{s.how}")
        return 0
    args.tasks = args.tasks or (2000 if args.quick else 20_000)
    args.round_trips = args.round_trips or (100 if args.quick else 1000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    names = (args.setups.split(",") if args.setups else
             [s.name for s in SETUPS if s.quick or not args.quick])
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise SystemExit(f"unknown setup(s): {', '.join(unknown)} (see --list)")
    if not service_up():
        raise SystemExit("Redis is not reachable on 127.0.0.1:6379")
    raw = redis.Redis.from_url(args.url)
    token = acquire_lock(raw)
    signal.signal(signal.SIGTERM, stop_on_signal)  # so the finally blocks stop the workers
    load_before, started = os.getloadavg()[0], time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="celeriac-peers-"))
    runs: list[Run] = []
    try:
        if any(BY_NAME[n].system in ("rq", "arq") for n in names) and foreign_keys(raw):
            raise SystemExit(f"{args.url} holds rq:* or arq:* keys this run did not write; "
                             "use another database (--url)")
        facts: dict[str, Any] = {"versions": versions({BY_NAME[n].system for n in names}),
                                 "load_before": load_before}
        for round_no, order in enumerate(plan(names, args.rounds), 1):
            for name in order:
                t0 = time.monotonic()
                run = run_setup(BY_NAME[name], round_no, args, raw, root)
                runs.append(run)
                status = run.error or (f"drain {run.drain:,.0f}/s, enqueue {run.enqueue:,.0f}/s; "
                                       + "; ".join(run.notes) if run.drain and run.enqueue
                                       else "done")
                print(f"# round {round_no}, {name}: {status} ({time.monotonic() - t0:.0f}s)",
                      file=sys.stderr, flush=True)
        facts["machine"] = machine(raw, load_before)
    finally:
        release_lock(raw, token)
        if args.keep:
            print(f"# logs kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    report(runs, args, facts, commit(), time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
