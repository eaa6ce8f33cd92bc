"""Scheduler failover under kill -9: N schedulers, the leader killed K times, every fire counted.

Starts N ``celeriac beat`` processes (``mode="beat"``) or N ``celeriac worker -B``
(``mode="worker"``) of a throw-away project on one broker (a SQLite file, Redis
under a unique key prefix, or PostgreSQL in a schema of its own, deleted
afterwards) with one entry firing every second into a queue nobody consumes. K
times it waits a random fraction of a period, SIGKILLs the holder of the leader
lease and (between kills) starts a replacement so N keep running. Then it stops
everything, reads every message the entry sent and the store's fire records, and
sorts every fire time from the first fire to the last:

* ``sent``: enqueued exactly once;
* ``duplicated``: enqueued more than once and **not** explained (must be 0);
* ``duplicated_at_kill``: enqueued twice, the second copy named by a scheduler's
  "re-sending" warning: the killed scheduler died between the broker accepting
  the message and the store recording it (same task id both times);
* ``skipped_with_warning``: not enqueued, named in a scheduler's
  "missed fires not sent" warning (the entry's missed-run policy chose so);
* ``lost``: neither enqueued nor named (must be 0).

It also reports ``max_gap`` (longest time between two consecutive sends),
``takeover`` (per kill: from the kill to the next send) and ``stuck_claims``
(fires left claimed, never sent: must be 0).

Run it (from the repository root, with Redis for the Redis runs)::

    python bench/reliability/beat_failover.py                        # SQLite, 3 beats, 3 kills
    python bench/reliability/beat_failover.py --broker redis://127.0.0.1:6379/15 --mode worker
    python bench/reliability/beat_failover.py --broker postgresql://postgres@127.0.0.1/test
    python bench/reliability/beat_failover.py --kills 10 --json      # the result as JSON

Self-contained: :func:`run` returns the result dict; the CLI prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any

UTC = timezone.utc
ENTRY, QUEUE, TASK = "failover-tick", "beat-failover-fires", "beatfailover.tick"
READY_TIMEOUT = 90.0
#: Environment variables that would point the project at another broker.
OVERRIDING_ENV = ("CELERIAC_BROKER_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND",
                  "CELERIAC_APP", "CELERIAC_SQLITE_PATH")
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?\+00:00"
SKIPPED = re.compile(r"beat: '(?P<entry>[^']+)': missed fires not sent \(.*?\): (?P<list>.*)$")
RANGE = re.compile(rf"every fire after ({STAMP}) and before ({STAMP})")
RESENT = re.compile(rf"re-sending '(?P<entry>[^']+)' fire (?P<fire>{STAMP}), task id")

PROJECT = '''\
from celeriac import Celery

app = Celery("beatfailover", broker={broker!r})
app.conf.broker_transport_options = {transport!r}
app.conf.beat_lease_seconds = {lease!r}
app.conf.beat_claim_timeout = {claim_timeout!r}
app.conf.beat_schedule = {{
    {entry!r}: {{"task": {task!r}, "schedule": {every!r}, "options": {{"queue": {queue!r}}},
                 "missed": {missed!r}, "max_lateness": {max_lateness!r}}},
}}


@app.task(name={task!r})
def tick():
    return None
'''


class Node:
    """One scheduler process (``beat`` or ``worker -B``) with its log file."""

    def __init__(self, workdir: Path, module: str, mode: str, index: int) -> None:
        self.log_path = workdir / f"{mode}-{index}.log"
        if mode == "beat":
            args, self.ready_line = ["beat", "-l", "INFO"], "is starting"
        else:
            args, self.ready_line = ["worker", "-B", "-P", "threads", "-c", "1",
                                     "-l", "INFO"], "ready."
        env = {k: v for k, v in os.environ.items() if k not in OVERRIDING_ENV}
        env.update(PYTHONPATH=str(workdir), PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celeriac", "-A", module, *args], cwd=workdir,
                env=env, stdout=out, stderr=subprocess.STDOUT)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while self.ready_line not in self.log:
            if self.proc.poll() is not None:
                raise RuntimeError(f"scheduler exited with {self.proc.returncode}:\n{self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"scheduler not ready after {timeout:.0f}s:\n{self.log}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self, timeout: float = 30.0) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()


def _wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def _holder_pid(store: Any) -> int | None:
    holder = store.lease_holder(datetime.now(UTC))
    if not holder:
        return None
    try:
        return int(holder.rsplit(":", 2)[-2])
    except (IndexError, ValueError):
        return None


def _live_holder(store: Any, nodes: list[Node]) -> Node | None:
    pid = _holder_pid(store)
    return next((n for n in nodes if n.alive() and n.proc.pid == pid), None)


def _named_in_logs(logs: list[str]) -> tuple[set[datetime], list[tuple[datetime, datetime]],
                                             set[datetime], int]:
    """Fire times named as skipped (and skipped ranges), re-sent fires, takeover warnings."""
    named: set[datetime] = set()
    ranges: list[tuple[datetime, datetime]] = []
    resent: set[datetime] = set()
    takeovers = 0
    for log in logs:
        for line in log.splitlines():
            takeovers += "taking over from the leader" in line
            skipped = SKIPPED.search(line)
            if skipped and skipped["entry"] == ENTRY:
                for item in skipped["list"].split(", "):
                    span = RANGE.search(item)
                    if span:
                        ranges.append((datetime.fromisoformat(span[1]),
                                       datetime.fromisoformat(span[2])))
                    elif re.fullmatch(STAMP, item.strip()):
                        named.add(datetime.fromisoformat(item.strip()))
            again = RESENT.search(line)
            if again and again["entry"] == ENTRY:
                resent.add(datetime.fromisoformat(again["fire"]))
    return named, ranges, resent, takeovers


def _drain_ids(app: Any) -> list[str]:
    ids: list[str] = []
    while True:
        batch = app.broker.receive([QUEUE], owner="beat-failover-check", limit=1000, timeout=0)
        if not batch:
            return ids
        ids += [str(d.message.task_id) for d in batch]
        app.broker.ack(batch)


def analyse(app: Any, store: Any, logs: list[str], kills: list[float]) -> dict[str, Any]:
    """Sort every fire time from the first fire to the last (see the module docstring)."""
    from celeriac.schedules.policy import fire_task_id

    entry = store.get_entry(ENTRY)
    records = store.list_fires(ENTRY)
    ids = Counter(_drain_ids(app))
    if entry is None or not records:
        raise RuntimeError("the entry never fired")
    first, last = records[0].fire_time, records[-1].fire_time
    grid, fire = [first], first
    while True:
        fire = entry.spec.schedule.next_fire_after(fire, anchor=entry.anchor, tz=UTC)
        if fire is None or fire > last:
            break
        grid.append(fire)
    named, ranges, resent, takeovers = _named_in_logs(logs)
    result: dict[str, list[str]] = {key: [] for key in (
        "sent", "duplicated", "duplicated_at_kill", "skipped_with_warning", "lost")}
    for fire in grid:
        count = ids.get(fire_task_id(ENTRY, fire), 0)
        if count == 1:
            kind = "sent"
        elif count > 1:
            kind = "duplicated_at_kill" if count == 2 and fire in resent else "duplicated"
        elif fire in named or any(lo < fire < hi for lo, hi in ranges):
            kind = "skipped_with_warning"
        else:
            kind = "lost"
        result[kind].append(fire.isoformat())
    expected_ids = {fire_task_id(ENTRY, f) for f in grid}
    sends = sorted((r.sent_at or r.claimed_at).timestamp() for r in records
                   if r.state == "sent")
    gaps = [b - a for a, b in pairwise(sends)]
    takeover = [round(min((s for s in sends if s > k), default=float("nan")) - k, 3)
                for k in kills]
    return {
        **{key: len(values) for key, values in result.items()},
        "expected": len(grid),
        "fires": result,
        "unexpected": sorted(set(ids) - expected_ids),
        "stuck_claims": [r.fire_time.isoformat() for r in records if r.state != "sent"],
        "max_gap": round(max(gaps, default=0.0), 3),
        "takeover": takeover,
        "takeover_warnings": takeovers,
        "window": [first.isoformat(), last.isoformat()],
    }


def _with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def _drop_schema(url: str, schema: str) -> None:
    import psycopg

    plain = url.split("?", 1)[0].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _cleanup_redis(broker_url: str, prefix: str) -> None:
    from celeriac.brokers.redis.client import get_client

    client = get_client(broker_url)  # one Redis or a Redis Cluster (keys tagged {...})
    for key in list(client.scan_iter(match=f"*{prefix}*", count=1000)):
        client.delete(key)


def run(broker_url: str = "sqlite", *, schedulers: int = 3, kills: int = 3,
        mode: str = "beat", every: float = 1.0, lease: float = 10.0,
        claim_timeout: float = 5.0, missed: str = "latest", max_lateness: float | None = None,
        warmup_fires: int = 3, seed: int | None = None, keep: bool = False,
        say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run the scenario once and return its figures (see the module docstring).

    ``broker_url``: ``"sqlite"`` (a file in a temporary directory), a
    ``redis://`` URL (keys under a unique prefix) or a ``postgresql://`` URL
    (tables in a schema of their own); whatever the run creates is deleted.
    """
    if mode not in ("beat", "worker"):
        raise ValueError("mode must be 'beat' or 'worker'")
    from celeriac import Celery
    from celeriac.schedules.stores import store_for_app

    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="beat-failover-"))
    is_redis = broker_url.startswith(("redis://", "rediss://", "redis+cluster://",
                                      "rediss+cluster://"))
    is_pg = broker_url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://"))
    engine = "redis" if is_redis else "postgresql" if is_pg else "sqlite"
    prefix = f"beat-failover-{uuid.uuid4().hex[:10]}:"
    schema = f"beat_failover_{uuid.uuid4().hex[:10]}"
    broker = (broker_url if is_redis else _with_schema(broker_url, schema) if is_pg
              else f"sqlite:///{workdir / 'broker.sqlite3'}")
    transport = {"global_keyprefix": prefix} if is_redis else {}
    module = f"beatfailover_{uuid.uuid4().hex[:8]}"
    (workdir / f"{module}.py").write_text(textwrap.dedent(PROJECT.format(
        broker=broker, transport=transport, lease=lease, claim_timeout=claim_timeout,
        entry=ENTRY, task=TASK, every=every, queue=QUEUE, missed=missed,
        max_lateness=max_lateness)))
    app = Celery("beat-failover-check", broker=broker)
    app.conf.broker_transport_options = transport
    app.conf.beat_lease_seconds = lease
    store = store_for_app(app)
    nodes: list[Node] = []
    kill_times: list[float] = []
    started = time.monotonic()
    try:
        nodes = [Node(workdir, module, mode, i) for i in range(schedulers)]
        for node in nodes:
            node.wait_ready()
        say(f"{schedulers} x {mode} ready on {engine}")
        _wait(lambda: len(store.list_fires(ENTRY)) >= warmup_fires, 60, "the first fires")
        for k in range(kills):
            leader = _wait(lambda: _live_holder(store, nodes), lease * 3 + 30,
                           "a live lease holder")
            time.sleep(rng.uniform(0, every))
            kill_times.append(time.time())
            leader.kill9()
            say(f"kill {k + 1}/{kills}: SIGKILL pid {leader.proc.pid}")
            time.sleep(max(lease, claim_timeout) + 3 * every)  # the takeover, the lease lapsing
            if k + 1 < kills:
                nodes.append(Node(workdir, module, mode, len(nodes)))
                nodes[-1].wait_ready()
        time.sleep(claim_timeout + 2 * every)
        for node in nodes:
            node.stop()
        result = analyse(app, store, [n.log for n in nodes], kill_times)
    finally:
        for node in nodes:
            node.kill9()
        store.close()
        app.close()
        if is_redis:
            _cleanup_redis(broker_url, prefix)
        if is_pg:
            _drop_schema(broker_url, schema)
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return {"scenario": "beat_failover", "broker": engine,
            "mode": mode, "schedulers": schedulers, "kills": kills, "every": every,
            "lease": lease, "claim_timeout": claim_timeout, "missed": missed,
            "seconds": round(time.monotonic() - started, 1), **result,
            "workdir": str(workdir) if keep else None}


def summary(result: dict[str, Any]) -> str:
    """One paragraph: the figures a reader looks for."""
    takeover = "/".join(f"{t:.1f}" for t in result["takeover"]) or "-"
    return (f"beat failover: {result['broker']}, {result['schedulers']} x {result['mode']}, "
            f"leader killed {result['kills']} times, entry every {result['every']:g}s, lease "
            f"{result['lease']:g}s\n"
            f"  fires expected {result['expected']}  sent {result['sent']}  duplicated "
            f"{result['duplicated']} (+{result['duplicated_at_kill']} at the kill instant)  "
            f"skipped with warning {result['skipped_with_warning']}  lost {result['lost']}  "
            f"stuck claims {len(result['stuck_claims'])}\n"
            f"  max gap {result['max_gap']:.2f}s  takeover after kill {takeover}s  "
            f"({result['seconds']:.0f}s run)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default="sqlite",
                        help="'sqlite' (default, a temporary file), a redis:// or a "
                             "postgresql:// URL")
    parser.add_argument("--mode", choices=("beat", "worker"), default="beat",
                        help="run 'celeriac beat' or 'celeriac worker -B' processes")
    parser.add_argument("--schedulers", type=int, default=3)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--every", type=float, default=1.0, help="the entry's period (s)")
    parser.add_argument("--lease", type=float, default=10.0, help="beat_lease_seconds")
    parser.add_argument("--claim-timeout", type=float, default=5.0, help="beat_claim_timeout")
    parser.add_argument("--missed", choices=("latest", "all", "skip"), default="latest")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the project and logs")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = run(args.broker, schedulers=args.schedulers, kills=args.kills, mode=args.mode,
                 every=args.every, lease=args.lease, claim_timeout=args.claim_timeout,
                 missed=args.missed, seed=args.seed, keep=args.keep,
                 say=lambda text: print(text, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=2) if args.json else summary(result))
    bad = result["lost"] or result["duplicated"] or result["stuck_claims"] or result["unexpected"]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
