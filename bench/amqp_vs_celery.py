"""Benchmark: celeriac against real Celery 5.7 on the same RabbitMQ, in one run.

Each setup has a fresh RabbitMQ virtual host (made and deleted with ``rabbitmqctl``):

* **enqueue**: ``incr.delay()`` called one at a time, N times, by a client app in this
  process (celeriac: publisher confirms always on; Celery: its default, confirms off,
  and ``confirm_publish=True`` for the like-for-like figure). The setups take turns
  in twenty rounds of N/20 calls (the order reversed every round), so a machine
  shared with other work slows them alike; the median of a setup's rounds is reported;
* **drain**: the worker is started on the filled queue from the CLI; every task does
  one Redis ``INCR`` (the same work on both sides); the clock runs from the first
  increment to the N-th (the counter is read every 10 ms). Each setup drains
  ``--rounds`` times (the order reversed every round, the queue refilled untimed);
  the median is reported.

Floors, measured in the same run: ``raw-py-amqp``, the enqueue loop with py-amqp
alone (``basic_publish_confirm`` of celeriac's own message, persistent, to a durable
queue, one at a time), and a raw py-amqp consumer (``basic_qos(128)``, one Redis
``INCR`` per message, ``basic_ack(multiple=True)`` every 32) in one process; and
``raw-socket`` (enqueue only), the same message's ``basic.publish`` frames rendered
once and written with ``socket.sendall``, then its ``basic.ack`` read with ``recv``:
no client library at all, so its rate is what RabbitMQ allows one sequential
publisher. RabbitMQ writes a persistent message to disk before it confirms it:
no ``delay()`` that waits for the confirm can beat that round trip.

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
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

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


class Side:
    """One setup: its virtual host, client app, counter key and worker command."""

    def __init__(self, setup: Setup, workdir: Path) -> None:
        self.name, self.setup, self.workdir = setup.name, setup, workdir
        self.vhost = f"celeriac-bench-{uuid.uuid4().hex[:8]}"
        rabbitmqctl("add_vhost", self.vhost)
        rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
        self.key = f"bench-amqp-{uuid.uuid4().hex[:8]}"
        self.env = {**os.environ, "BENCH_REDIS": REDIS, "BENCH_KEY": self.key,
                    "BENCH_BROKER": f"amqp://guest:guest@127.0.0.1:5672/{self.vhost}",
                    "PYTHONPATH": f"{workdir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.module = f"bench_amqp_{setup.package}_{uuid.uuid4().hex[:6]}"
        (workdir / f"{self.module}.py").write_text(TASKS.format(package=setup.package,
                                                                transport=setup.transport))
        os.environ.update({k: self.env[k] for k in ("BENCH_BROKER", "BENCH_REDIS",
                                                    "BENCH_KEY")})
        self.client = load(workdir / f"{self.module}.py", self.module)
        self.counter = redis.Redis.from_url(REDIS)
        self.rates, self.drains = list[float](), list[float]()

    def send(self) -> None:
        self.client.incr.delay()

    def drain(self, tasks: int) -> float:
        """Start the worker on ``tasks + 1`` queued messages; tasks/s after the first."""
        self.counter.delete(self.key)
        cli = ([sys.executable, "-m", "celery"] if self.setup.package == "celery"
               else [sys.executable, "-m", "celeriac"])
        log = open(self.workdir / f"{self.module}.log", "ab")  # noqa: SIM115 - closed below
        proc = subprocess.Popen([*cli, "-A", self.module, "worker", "-l", "WARNING",
                                 *self.setup.worker], cwd=self.workdir, env=self.env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            return count_drain(self.counter, self.key, tasks)
        finally:
            stop_processes([proc])
            log.close()

    def close(self) -> None:
        closer = getattr(self.client.app, "close", None)
        if closer is not None:
            closer()
        self.counter.delete(self.key)
        rabbitmqctl("delete_vhost", self.vhost)


def count_drain(counter: redis.Redis, key: str, tasks: int) -> float:
    while int(counter.get(key) or 0) < 1:
        time.sleep(0.005)
    first = time.perf_counter()
    deadline = first + 600
    while int(counter.get(key) or 0) < tasks + 1 and time.perf_counter() < deadline:
        time.sleep(0.01)
    return (int(counter.get(key) or 0) - 1) / (time.perf_counter() - first)


class RawSide(Side):
    """The floors: py-amqp alone, publishing celeriac's own message and consuming it."""

    def __init__(self, workdir: Path) -> None:
        import amqp

        from celeriac.brokers.amqp import wire
        from celeriac.messages import task_message

        self.name, self.amqp = "raw-py-amqp", amqp
        self.vhost = f"celeriac-bench-{uuid.uuid4().hex[:8]}"
        rabbitmqctl("add_vhost", self.vhost)
        rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
        self.key = f"bench-amqp-{uuid.uuid4().hex[:8]}"
        self.counter = redis.Redis.from_url(REDIS)
        self.rates, self.drains = list[float](), list[float]()
        self.conn = amqp.Connection("127.0.0.1:5672", virtual_host=self.vhost)
        self.conn.connect()
        self.chan = self.conn.channel()
        self.chan.confirm_select()
        self.chan.queue_declare("celery", durable=True, auto_delete=False)
        self.sample = wire.encode(task_message("bench.incr", str(uuid.uuid4()), (), {}), 0)

    def send(self) -> None:
        self.chan.basic_publish_confirm(
            self.amqp.Message(self.sample.body, **self.sample.properties),
            exchange="", routing_key="celery")

    def drain(self, tasks: int) -> float:
        self.counter.delete(self.key)
        eater = self.amqp.Connection("127.0.0.1:5672", virtual_host=self.vhost)
        eater.connect()
        got = [0]
        chan = eater.channel()
        chan.basic_qos(0, 128, False)

        def on_message(message: Any) -> None:
            self.counter.incr(self.key)
            got[0] += 1
            if got[0] % 32 == 0 or got[0] == tasks + 1:
                chan.basic_ack(message.delivery_info["delivery_tag"], multiple=True)

        chan.basic_consume("celery", callback=on_message)
        eater.drain_events(timeout=10)
        first = time.perf_counter()
        while got[0] < tasks + 1:
            eater.drain_events(timeout=10)
        elapsed = time.perf_counter() - first
        eater.close()
        return (got[0] - 1) / elapsed

    def close(self) -> None:
        self.conn.close()
        self.counter.delete(self.key)
        rabbitmqctl("delete_vhost", self.vhost)


class RawSocketSide(RawSide):
    """The enqueue floor without a client library: pre-rendered frames and ``recv``."""

    def __init__(self, workdir: Path) -> None:
        from celeriac.brokers.amqp import frames

        super().__init__(workdir)
        self.name = "raw-socket"
        self.sock = self.conn.transport.sock
        props = frames.encode_properties(self.sample.properties)
        self.frames = frames.publish_frames(self.chan.channel_id, "", "celery", props,
                                            self.sample.body, self.conn.frame_max)

    def send(self) -> None:
        self.sock.sendall(self.frames)
        got = 0
        while got < 21:  # its basic.ack frame (no heartbeats: nothing else comes)
            got += len(self.sock.recv(64))

    def drain(self, tasks: int) -> float:
        return float("nan")  # enqueue only


def measure(sides: list[Side], tasks: int, rounds: int) -> None:
    """Enqueue in interleaved rounds, then drain every side ``rounds`` times."""
    for side in sides:
        side.send()  # connect and declare outside the clock
    turns = 20
    for turn in range(turns):
        order = sides if turn % 2 == 0 else sides[::-1]
        for side in order:
            count = tasks // turns + (1 if turn < tasks % turns else 0)
            started = time.perf_counter()
            for _ in range(count):
                side.send()
            side.rates.append(count / (time.perf_counter() - started))
    for turn in range(rounds):
        for side in sides if turn % 2 == 0 else sides[::-1]:
            if isinstance(side, RawSocketSide):
                continue  # enqueue only
            if turn:
                for _ in range(tasks + 1):  # refill, untimed
                    side.send()
            side.drains.append(side.drain(tasks))
            print(f"  {side.name:32} drain {side.drains[-1]:8.0f}/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2, help="drains per setup")
    parser.add_argument("--setups", default=",".join(s.name for s in SETUPS))
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--no-floor", action="store_true",
                        help="skip the raw floors (raw-socket, raw py-amqp)")
    args = parser.parse_args()
    chosen = [s for s in SETUPS if s.name in args.setups.split(",")]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        sides: list[Side] = [] if args.no_floor else [RawSocketSide(Path(tmp)),
                                                      RawSide(Path(tmp))]
        try:
            sides += [Side(setup, Path(tmp)) for setup in chosen]
            measure(sides, args.tasks, args.rounds)
        finally:
            for side in sides:
                side.close()
    rows = [(side.name, {"enqueue": statistics.median(side.rates),
                         "drain": statistics.median(side.drains) if side.drains else 0.0})
            for side in sides]
    best_celery = max((r["drain"] for n, r in rows if n.startswith("celery")), default=0.0)
    celery_confirms = next((r["enqueue"] for n, r in rows if n == "celery-prefork-c2-confirms"),
                           0.0)
    lines = ["| setup | enqueue/s | drain/s |", "|---|---|---|"]
    lines += [f"| {n} | {r['enqueue']:.0f} | {r['drain']:.0f} |" if r["drain"] else
              f"| {n} | {r['enqueue']:.0f} | - |" for n, r in rows]
    floor = next((r for n, r in rows if n == "raw-py-amqp"), None)
    bare = next((r for n, r in rows if n == "raw-socket"), None)
    for name, result in rows:
        if name.startswith("celeriac") and best_celery and celery_confirms:
            line = (f"\n{name}: drain {result['drain'] / best_celery:.2f}x Celery's best "
                    f"(target 3x), enqueue {result['enqueue'] / celery_confirms:.2f}x Celery "
                    "with confirms (target 2x)")
            if floor:
                line += (f"; enqueue {result['enqueue'] / floor['enqueue']:.2f}x the raw "
                         "py-amqp publish+confirm loop")
            if bare:
                line += (f", {result['enqueue'] / bare['enqueue']:.2f}x the raw-socket floor "
                         "(what RabbitMQ allows)")
            lines.append(line)
    if floor and celery_confirms:
        ratio = floor["enqueue"] / celery_confirms
        lines.append(f"\nraw py-amqp publish+confirm loop: {ratio:.2f}x Celery with confirms "
                     "(what the enqueue target is measured against on this server)")
    if bare and celery_confirms:
        lines.append(f"\nraw-socket floor: {bare['enqueue'] / celery_confirms:.2f}x Celery "
                     "with confirms: the most any client can reach here, one publish and "
                     "its confirm at a time")
    body = "\n".join(lines) + (
        f"\n\n{args.tasks} tasks per setup, each one Redis INCR; enqueue: median of 20 "
        f"interleaved rounds; drain: median of "
        f"{args.rounds} per setup; the raw py-amqp consumer is one process; raw-socket "
        "enqueues only. Python "
        f"{platform.python_version()}, 1-minute load average {load_before:.1f} before and "
        f"{os.getloadavg()[0]:.1f} after (a shared 2-core machine: compare setups of one "
        "run only).\n")
    print(body)
    if args.write:
        results = HERE / "RESULTS.md"
        text = results.read_text() if results.exists() else "# Benchmark results\n"
        results.write_text(replace_section(text, "RabbitMQ: celeriac vs Celery", body))


if __name__ == "__main__":
    main()
