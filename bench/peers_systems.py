"""The setups ``bench/peers.py`` measures: how each system's workers are started.

A *setup* is one way to run one *system* on a 2-core budget: worker command
lines, extra environment, the keys that hold its ready queue (moved aside
while the workers start, see ``peers.py``) and the keys to delete afterwards.
Every system runs the same task (:mod:`peerapps`); each system's best setup is
the candidate with the highest median drain in the run. Why each candidate is
there is written next to it, and in ``bench/README.md``.

arq pins ``redis<6`` while Celery 5.7's kombu needs ``redis>=6.1``, so arq's
worker and client run from their own virtualenv (``bench/.venv-arq``, made by
:func:`arq_python` on the first run that selects an arq setup, never otherwise).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
ARQ_VENV = HERE / ".venv-arq"
ARQ_REQUIREMENT = "arq==0.28.0"

#: system -> (label, app module)
SYSTEMS = {
    "celery": ("Celery 5.7", "peerapps.celery_compat"),
    "celeriac": ("celeriac (Redis)", "peerapps.celery_compat"),
    "celeriac-sqlite": ("celeriac (embedded SQLite)", "peerapps.celery_compat"),
    "dramatiq": ("Dramatiq", "peerapps.dramatiq_app"),
    "huey": ("Huey", "peerapps.huey_app"),
    "arq": ("arq", "peerapps.arq_app"),
    "rq": ("RQ", "peerapps.rq_app"),
}
#: Celery's flags that only save start-up and broadcast traffic (no effect on tasks)
CELERY_LEAN = ["--without-mingle", "--without-gossip", "--without-heartbeat"]


@dataclass(frozen=True)
class Setup:
    """One way to run one system's workers."""

    name: str
    system: str
    how: str  # what a reader needs to reproduce it
    workers: list[list[str]]  # one argv per worker process ("{i}" -> worker index)
    env: dict[str, str] = field(default_factory=dict)
    quick: bool = False  # also run in --quick mode
    stop_signal: int = signal.SIGTERM

    @property
    def module(self) -> str:
        return SYSTEMS[self.system][1]

    @property
    def label(self) -> str:
        return SYSTEMS[self.system][0]

    def python(self) -> str:
        return arq_python() if self.system == "arq" else sys.executable

    def queue_keys(self, prefix: str) -> list[str]:
        """The Redis keys that hold the ready queue (moved aside while workers start)."""
        return {
            "celery": [f"{prefix}celery"],
            "celeriac": [f"{prefix}celery"],
            "dramatiq": [f"{prefix}dramatiq:default"],
            "huey": [f"huey.redis.peers{''.join(c for c in prefix if c.isalnum())}"],
            "arq": [f"{prefix}arq:queue"],
            "rq": [f"rq:queue:{prefix}rq"],
        }.get(self.system, [])

    def cleanup_patterns(self, prefix: str) -> list[str]:
        """Key patterns this setup may have written (deleted after it ran)."""
        fixed = {"huey": [f"huey.*.peers{''.join(c for c in prefix if c.isalnum())}*"],
                 "arq": ["arq:*"], "rq": ["rq:*"]}
        return [f"{prefix}*", *fixed.get(self.system, [])]

    def commands(self, url: str, prefix: str) -> list[list[str]]:
        """Worker command lines, with ``{i}`` (1, 2...), ``{python}``, ``{url}``,
        ``{prefix}`` and ``{tag}`` (the prefix's letters and digits) filled in."""
        values = {"{python}": self.python(), "{url}": url, "{prefix}": prefix,
                  "{tag}": "".join(c for c in prefix if c.isalnum())}
        out = []
        for i, argv in enumerate(self.workers, 1):
            values["{i}"] = str(i)
            for key, value in values.items():
                argv = [part.replace(key, value) for part in argv]
            out.append(argv)
        return out


def _celery(*tail: str) -> list[str]:
    return [str(BIN / "celery"), "-A", "peerapps.celery_compat", "worker", "-n", "peers{i}@%h",
            *tail]


def _celeriac(*tail: str) -> list[str]:
    return [str(BIN / "celeriac"), "-A", "peerapps.celery_compat", "worker", *tail]


def _arq() -> list[str]:
    return ["{python}", "-m", "peerapps.arq_app"]


CELERY = {"BENCH_PACKAGE": "celery"}
CELERIAC = {"BENCH_PACKAGE": "celeriac"}
ARQ_FAST = {"BENCH_ARQ_POLL_DELAY": "0.005", "BENCH_ARQ_RESULT_POLL": "0.001"}

SETUPS: list[Setup] = [
    # celeriac with its defaults: exactly `celeriac -A app worker`, as the README says.
    Setup("celeriac-default", "celeriac", "`celeriac -A app worker` (no flags: prefork, "
          "-c = 2 cores, default prefetch)", [_celeriac()], CELERIAC, quick=True),
    Setup("celeriac-solo-x2-p64", "celeriac", "2 x `celeriac worker -P solo "
          "--prefetch-multiplier 64`", [_celeriac("-P", "solo", "-n", "peers{i}@%h",
                                                   "--prefetch-multiplier", "64")] * 2,
          CELERIAC, quick=True),
    Setup("celeriac-prefork-c2-p64", "celeriac", "`celeriac worker -P prefork -c 2 "
          "--prefetch-multiplier 64`", [_celeriac("-c", "2", "--prefetch-multiplier", "64")],
          CELERIAC),
    Setup("celeriac-sqlite-default", "celeriac-sqlite", "`celeriac -A app worker` with no "
          "broker configured (embedded SQLite file, results in it too)", [_celeriac()],
          {**CELERIAC, "BENCH_BROKER": "default"}, quick=True),
    # Celery: its documented throughput advice is a high prefetch, no mingle/gossip/heartbeat
    # and one process per core; solo x 2 and prefork -c 2 compete for best.
    Setup("celery-solo-x2-p64", "celery", "2 x `celery worker -P solo --prefetch-multiplier "
          "64 --without-mingle --without-gossip --without-heartbeat`",
          [_celery("-P", "solo", "--prefetch-multiplier", "64", *CELERY_LEAN)] * 2, CELERY,
          quick=True),
    Setup("celery-prefork-c2-p64", "celery", "`celery worker -P prefork -c 2 "
          "--prefetch-multiplier 64` + the same three flags",
          [_celery("-P", "prefork", "-c", "2", "--prefetch-multiplier", "64", *CELERY_LEAN)],
          CELERY, quick=True),
    Setup("celery-solo-x2-p256", "celery", "as celery-solo-x2-p64 with prefetch 256",
          [_celery("-P", "solo", "--prefetch-multiplier", "256", *CELERY_LEAN)] * 2, CELERY),
    Setup("celery-default", "celery", "`celery -A app worker` (no flags: prefork -c 2, "
          "prefetch 4, mingle, gossip, heartbeat)", [_celery()], CELERY),
    # Dramatiq: its defaults are 2 processes (one per core) x 8 threads, prefetch 2 x threads.
    Setup("dramatiq-default", "dramatiq", "`dramatiq peerapps.dramatiq_app` (2 processes x "
          "8 threads, prefetch 16)", [[str(BIN / "dramatiq"), "peerapps.dramatiq_app"]], {}),
    Setup("dramatiq-p2-t2-pf64", "dramatiq", "`dramatiq -p 2 -t 2` with "
          "dramatiq_queue_prefetch=64", [[str(BIN / "dramatiq"), "peerapps.dramatiq_app",
                                          "-p", "2", "-t", "2"]],
          {"dramatiq_queue_prefetch": "64"}, quick=True),
    # Huey: one consumer, one worker process per core, quiet logs, results pushed (BLPOP).
    Setup("huey-process-w2", "huey", "`huey_consumer peerapps.huey_app.huey -k process -w 2 "
          "-q` with RedisHuey(notify_result=True)",
          [[str(BIN / "huey_consumer"), "peerapps.huey_app.huey", "-k", "process", "-w", "2",
            "-q"]], {"BENCH_HUEY_NOTIFY": "1"}, quick=True, stop_signal=signal.SIGINT),
    Setup("huey-process-w2-polling", "huey", "as huey-process-w2 with Huey's default "
          "result wait (polls every 50 ms and more, growing by 1.15x)",
          [[str(BIN / "huey_consumer"), "peerapps.huey_app.huey", "-k", "process", "-w", "2",
            "-q"]], {}, stop_signal=signal.SIGINT),
    Setup("huey-thread-w4", "huey", "`huey_consumer ... -k thread -w 4 -q` "
          "(notify_result=True): one process", [[str(BIN / "huey_consumer"),
                                                  "peerapps.huey_app.huey", "-k", "thread",
                                                  "-w", "4", "-q"]], {"BENCH_HUEY_NOTIFY": "1"},
          stop_signal=signal.SIGINT),
    # arq: single-process asyncio, so one worker per core; its 0.5 s poll caps throughput.
    Setup("arq-x2-poll5ms", "arq", "2 x `run_worker(WorkerSettings)` with poll_delay 5 ms "
          "(max_jobs 10, arq's default), client `Job.result(poll_delay=1 ms)`, logs at WARNING",
          [_arq()] * 2, ARQ_FAST, quick=True),
    Setup("arq-x2-poll5ms-j50", "arq", "as arq-x2-poll5ms with max_jobs 50", [_arq()] * 2,
          {**ARQ_FAST, "BENCH_ARQ_MAX_JOBS": "50"}),
    Setup("arq-x2-default", "arq", "2 x `run_worker(WorkerSettings)` with arq's defaults "
          "(max_jobs 10, poll_delay 0.5 s, client poll 0.5 s), logs at WARNING",
          [_arq()] * 2, {}),
    # RQ: SimpleWorker runs jobs in the worker process (no fork per job); one per core.
    Setup("rq-simple-x2", "rq", "2 x `rq worker -w rq.worker.SimpleWorker --logging_level "
          "WARNING`", [[str(BIN / "rq"), "worker", "-u", "{url}", "-w", "rq.worker.SimpleWorker",
                        "--logging_level", "WARNING", "-n", "peers{i}-{tag}", "{prefix}rq"]]
          * 2, {}, quick=True),
]
BY_NAME = {setup.name: setup for setup in SETUPS}


def arq_python() -> str:
    """The interpreter of arq's own virtualenv, created with pip on first use."""
    python = ARQ_VENV / "bin" / "python"
    if not python.exists():
        print(f"# creating {ARQ_VENV} for {ARQ_REQUIREMENT} (arq pins redis<6)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(ARQ_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", ARQ_REQUIREMENT], check=True)
    return str(python)
