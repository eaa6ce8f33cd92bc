"""The worker scenarios: kill -9 of children and of the supervisor, SIGSTOP, a GIL holder, memory.

Each scenario gets a fresh private server (:mod:`servers`) and a fresh project
(:mod:`projects`), runs real worker processes from the system's CLI, injects
its fault, waits for the queue to drain (bounded: what has not finished by then
is counted lost), and returns :class:`counting.Figures`. Calls are published raw
(:func:`fuzz.publish_raw` of :func:`fuzz.valid` messages), the same bytes for
celeriac and Celery 5.7. Worker settings are each system's defaults (two
prefork children, celeriac's 30 s lease, Celery's early acknowledgement)
except where a scenario says otherwise.
"""

from __future__ import annotations

import os
import random
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import counting
import fuzz
from counting import Fault, Figures
from projects import Project, child_pids, tree_rss_kib, wait_for
from servers import SERVERS, Server

#: how long after the last fault a call may take to finish before it counts as lost
DRAIN = 120.0
#: ... or after nothing finished for this long: longer than celeriac's 30 s lease, so a
#: lapsed lease has had its chance; Celery gives nothing back sooner than its
#: ``visibility_timeout`` (one hour) on Redis, and at once on RabbitMQ
IDLE = {"celeriac": 40.0, "celery": 20.0}


@dataclass
class Context:
    """One broker's run: where files go, how big, how to talk."""

    broker: str
    quick: bool = False
    say: Callable[[str], None] = print
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="reliability-")))

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full


@contextmanager
def session(ctx: Context, system: str, scenario: str, **conf: Any
            ) -> Iterator[tuple[Server, Project]]:
    """A fresh private server and project for one scenario; both removed afterwards."""
    server = SERVERS[ctx.broker]()
    project: Project | None = None
    try:
        server.start()
        merged = dict(server.conf)  # (Sentinel's master name) + the scenario's settings
        for key, value in conf.items():
            merged[key] = ({**merged[key], **value} if key.endswith("transport_options")
                           and key in merged else value)
        project = Project(ctx.root / f"{scenario}-{system}", system, server.url, merged)
        yield server, project
    finally:
        if project is not None:
            project.close()
        server.close()


def dead_keys(project: Project) -> dict[str, int] | None:
    """Marker -> delivery count of celeriac's dead letters (None for Celery: no store)."""
    if project.system != "celeriac":
        return None
    out: dict[str, int] = {}
    for letter in project.tasks.app.broker.dead_letters(limit=100_000):
        msg = letter.message
        marker = fuzz.find_marker(msg.headers, msg.properties, msg.body)
        if marker is not None:
            out[marker] = letter.delivery_count
    return out


def warm_up(project: Project, broker: str, url: str, timeout: float = 90.0) -> None:
    """Publish probe calls until one runs: the worker is consuming and its queue exists
    (RabbitMQ drops a message sent to a queue nobody declared yet)."""
    if project.system == "celeriac" and broker in ("sqlite", "postgres"):
        project.tasks.app.broker.stats(fuzz.QUEUE)  # creates the tables
    deadline = time.monotonic() + timeout
    probe = 0
    while time.monotonic() < deadline:
        fuzz.publish_raw(broker, url, [fuzz.valid(f"probe-{probe}")])
        probe += 1
        if wait_for(lambda: project.done_count("probe-") >= 1, 3.0):
            return
    raise RuntimeError(f"{project.system} worker never ran a probe on {broker}:\n"
                       f"{project.log_text()[-3000:]}")


def drain(project: Project, keys: list[str], timeout: float = DRAIN) -> None:
    """Wait until every key finished or was dead-lettered, until nothing has finished
    for ``idle`` seconds (longer than celeriac's 30 s lease: a lapsed lease has had
    its chance), or until ``timeout`` passes."""
    wanted = set(keys)
    idle = IDLE[project.system]
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        done = {r.key for r in project.runs() if r.event == "done"}
        missing = wanted - done
        if missing and project.system == "celeriac" and len(missing) < 200:
            missing -= set(dead_keys(project) or {})
        if not missing:
            return
        if len(done) != last:
            last, last_change = len(done), time.monotonic()
        elif time.monotonic() - last_change > idle:
            return
        time.sleep(1.0)


def publish(ctx: Context, url: str, keys: list[str], ms: Callable[[int], int]) -> None:
    fuzz.publish_raw(ctx.broker, url, [fuzz.valid(k, ms(i)) for i, k in enumerate(keys)])


def finish(ctx: Context, project: Project, scenario: str, keys: list[str],
           faults: list[Fault], started: float) -> Figures:
    figures = counting.count(scenario, ctx.broker, project.system, keys, project.runs(),
                             dead_keys(project), faults)
    figures.seconds = round(time.monotonic() - started, 1)
    return figures


# -- scenarios ----------------------------------------------------------------------------
def kill_children(ctx: Context, system: str) -> Figures:
    """SIGKILL a random prefork child every second while 4 children drain a backlog."""
    started = time.monotonic()
    rng = random.Random(21)
    with session(ctx, system, "kill_children") as (server, project):
        worker = project.start_worker("-c", "4")
        warm_up(project, ctx.broker, server.url)
        keys = [f"k-{i}" for i in range(ctx.size(2000, 500))]
        publish(ctx, server.url, keys, lambda i: rng.randint(5, 40))
        faults: list[Fault] = []
        progress = [0, time.monotonic()]
        while project.done_count("k-") < len(keys) and len(faults) < 60:
            time.sleep(1.0)
            done = project.done_count("k-")
            if done != progress[0]:
                progress = [done, time.monotonic()]
            elif time.monotonic() - progress[1] > 3.0:
                break  # nothing left to run: the rest is lost or comes back later
            children = child_pids(worker.pid)
            if children and worker.poll() is None:
                victim = rng.choice(children)
                os.kill(victim, signal.SIGKILL)
                now = time.time()
                faults.append(Fault("kill", now, now, frozenset({victim})))
        drain(project, keys)
        figures = finish(ctx, project, "kill -9 children", keys, faults, started)
        figures.notes.append(f"{len(faults)} children killed")
        if worker.poll() is not None:
            figures.notes.append(f"worker exited ({worker.returncode})")
            figures.ok = False
    return figures


def kill_supervisor(ctx: Context, system: str) -> Figures:
    """SIGKILL the supervisor (its children live on) mid-backlog; a new worker starts at once."""
    started = time.monotonic()
    with session(ctx, system, "kill_supervisor") as (server, project):
        first = project.start_worker("-c", "2", name="w1")
        warm_up(project, ctx.broker, server.url)
        keys = [f"k-{i}" for i in range(ctx.size(600, 300))]
        publish(ctx, server.url, keys, lambda i: 20)
        wait_for(lambda: project.done_count("k-") >= len(keys) // 3, 60)
        pids = frozenset({first.pid, *child_pids(first.pid)})
        first.send_signal(signal.SIGKILL)
        killed_at = time.time()
        project.start_worker("-c", "2", name="w2")
        drain(project, keys)
        figures = finish(ctx, project, "kill -9 supervisor", keys,
                         [Fault("kill", killed_at, killed_at, pids)], started)
    return figures


def sigstop(ctx: Context, system: str, stopped_for: float = 12.0) -> Figures:
    """SIGSTOP a whole worker (supervisor and children) past its lease, then SIGCONT it.

    celeriac runs with a 5 s lease here (heartbeat 1 s) so the pause outlasts it
    within a short run: a second worker takes the paused one's calls over; the
    woken worker's late outcomes are fenced. Celery keeps its defaults.
    """
    started = time.monotonic()
    conf = ({"worker_lease_seconds": 5, "worker_heartbeat_interval": 1}
            if system == "celeriac" else {})
    with session(ctx, system, "sigstop", **conf) as (server, project):
        first = project.start_worker("-c", "2", name="w1")
        warm_up(project, ctx.broker, server.url)
        project.start_worker("-c", "2", name="w2")
        keys = [f"k-{i}" for i in range(ctx.size(400, 200))]
        publish(ctx, server.url, keys, lambda i: 50)
        wait_for(lambda: project.done_count("k-") >= len(keys) // 4, 60)
        pids = frozenset({first.pid, *child_pids(first.pid)})
        os.killpg(first.pid, signal.SIGSTOP)
        stop_at = time.time()
        time.sleep(stopped_for)
        os.killpg(first.pid, signal.SIGCONT)
        cont_at = time.time()
        drain(project, keys)
        figures = finish(ctx, project, "SIGSTOP worker", keys,
                         [Fault("stop", stop_at, cont_at, pids)], started)
        figures.notes.append(f"stopped {stopped_for:.0f}s")
        if first.poll() is not None:
            figures.notes.append(f"paused worker exited ({first.returncode})")
    return figures


def gil_holder(ctx: Context, system: str, hold: int = 10) -> Figures:
    """A task holding its process's GIL for 3+ leases (lease 3 s) beside normal calls, 2 workers."""
    started = time.monotonic()
    conf = {"worker_lease_seconds": 3, "worker_heartbeat_interval": 1}
    with session(ctx, system, "gil", **conf) as (server, project):
        project.start_worker("-c", "2", name="w1")
        warm_up(project, ctx.broker, server.url)
        project.start_worker("-c", "2", name="w2")
        gil = fuzz.valid("gil-0")
        gil.headers["task"] = "reliability.hold_gil"
        gil.body[0] = ["gil-0", hold]
        fuzz.publish_raw(ctx.broker, server.url, [gil])
        keys = [f"k-{i}" for i in range(100)]
        publish(ctx, server.url, keys, lambda i: 20)
        drain(project, ["gil-0", *keys], timeout=hold + DRAIN)
        time.sleep(4.0)  # one more lease: a lapsed lease would re-run it now
        figures = finish(ctx, project, "GIL-holding task", ["gil-0", *keys], [], started)
        runs = sum(1 for r in project.runs() if r.key == "gil-0" and r.event == "start")
        figures.notes.append(f"GIL held {hold}s with a 3s lease; the task started {runs}x")
        figures.ok = figures.ok and runs == 1
    return figures


def memory(ctx: Context, system: str) -> Figures:
    """RSS of the worker tree (supervisor + children) while it runs 50,000 calls."""
    started = time.monotonic()
    total = ctx.size(50_000, 5_000)
    with session(ctx, system, "memory") as (server, project):
        worker = project.start_worker("-c", "2")
        warm_up(project, ctx.broker, server.url)
        keys = [f"k-{i}" for i in range(total)]
        samples: list[tuple[int, int]] = []
        chunk = 5_000
        for start in range(0, total, chunk):
            publish(ctx, server.url, keys[start:start + chunk], lambda i: 0)
            while project.done_count("k-") < start + chunk // 2:
                samples.append((project.done_count("k-"), tree_rss_kib(worker.pid)))
                if worker.poll() is not None or time.monotonic() - started > 900:
                    break
                time.sleep(1.0)
        drain(project, keys, timeout=300)
        samples.append((project.done_count("k-"), tree_rss_kib(worker.pid)))
        figures = finish(ctx, project, f"memory over {total:,} tasks", keys, [], started)
        figures.notes.append(rss_note(samples))
    return figures


def rss_note(samples: list[tuple[int, int]]) -> str:
    """``RSS 41 MiB after 1,000 -> 43 MiB after 50,000 (peak 45)``."""
    warm = [s for s in samples if s[0] >= 1000 and s[1]] or [s for s in samples if s[1]]
    if not warm:
        return "RSS not measured"
    first, last = warm[0], warm[-1]
    peak = max(s[1] for s in warm)
    return (f"RSS {first[1] / 1024:.0f} MiB after {first[0]:,} -> {last[1] / 1024:.0f} MiB "
            f"after {last[0]:,} (peak {peak / 1024:.0f})")
