"""What ``bench/peers.py`` prints and writes: the tables, the ratios, PEERS.md, the chart
and its section of RESULTS.md (between ``<!-- peers.py: begin/end -->`` markers;
the rest of RESULTS.md belongs to the other benchmarks and is kept as it is), and the
facts about the run they state (versions, machine, commit)."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import redis
from benchlib import replace_section
from peers_report import (
    Run,
    chart,
    headline,
    ratios,
    runs_markdown,
    summarize,
    summary_markdown,
    text_table,
)
from peers_systems import BY_NAME, HERE, SYSTEMS

METHOD = """\
## Method

* **Same task, same Redis.** Every system runs `incr(key)`: one Redis `INCR`
  on its own connection, returning the new value (so every system stores a
  non-empty result). Completion is counted by reading that counter, the same
  way for everyone. Broker, results and counters share one Redis database
  (14 unless `--url`), one unique key prefix per setup run, and a lock.
* **Enqueue**: single sequential calls (`delay()`, `send()`, `enqueue()`,
  calling the Huey task, `enqueue_job()`) from a fresh client process, after
  100 untimed calls. The raw LPUSH reference is measured in the same process
  right after celeriac's enqueue, pushing the bytes celeriac stored.
* **Drain**: N + 100 tasks are queued before the workers start, then moved
  aside (`RENAME`; SQLite: `UPDATE` of the queue name). Workers start, warm
  up on a trickle of tasks counted elsewhere, and once their CPU is quiet the
  backlog is put back in one step, followed by a few warm-up tasks sent at
  once (celeriac workers wait for a publisher's wake-up token, which a
  `RENAME` does not send). The clock runs from the first `INCR` of the drain
  counter to the last. Worker start-up, imports and idle back-off
  are thus excluded for everyone.
* **CPU per task**: user + system time of the worker process tree (including
  reaped children) over the drain window, divided by the tasks drained.
* **RSS / PSS**: peak of the sum over the worker process tree of
  `/proc/<pid>/smaps_rollup`, sampled every 0.25 s during the drain and the
  round trips. PSS shares pages between the processes that map them, so
  forked pools are not counted twice.
* **Round trip**: `delay().get()` or the system's equivalent (Dramatiq
  `get_result(block=True)`, Huey `get(blocking=True)` with `notify_result`,
  arq `Job.result()` polling, RQ `latest_result(timeout=)`), 20 untimed,
  then K timed, or as many as fit in 20 s for systems that poll for results
  (the per-round table says how many); p50 and p99 by nearest rank.
* **Order**: rotated by one place each round; celeriac's default setup always
  runs before its other setups. Each system's best setup is its candidate
  with the highest median drain; `*` marks it in the tables.
* **Logging**: every worker logs at WARNING (Celery's and celeriac's
  default); peers whose default logs every job at INFO are quietened, as a
  user tuning for speed would.
* **Results kept**: Celery and celeriac store every result (their
  defaults with a result backend); Dramatiq with `store_results=True`; Huey,
  arq and RQ store results by default.
"""


def versions(systems: set[str]) -> dict[str, str]:
    """Installed versions; arq's (from its own virtualenv, made on first use) only when
    one of ``systems`` is arq, so a run without arq never creates ``bench/.venv-arq``."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    out = {name: installed(name) for name in ("celeriac", "celery", "kombu", "dramatiq", "huey",
                                              "rq", "redis", "hiredis", "orjson")}
    if "arq" not in systems:
        return out
    arq = subprocess.run([BY_NAME["arq-x2-poll5ms"].python(), "-c",
                          "from importlib.metadata import version as v;"
                          "print(v('arq'), v('redis'), v('hiredis'))"],
                         capture_output=True, text=True, check=True).stdout.split()
    out["arq"] = f"{arq[0]} (own venv: redis {arq[1]}, hiredis {arq[2]})"
    return out


def machine(raw: redis.Redis, load_before: float) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    return (f"{os.cpu_count()} cores ({cpu}), {mem} GiB RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}, Redis {raw.info('server')['redis_version']} "
            f"on loopback; 1-minute load average {load_before:.2f} before the run, "
            f"{os.getloadavg()[0]:.2f} after")


def commit() -> str:
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=HERE, capture_output=True,
                              text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--", "../src", ".", "../pyproject.toml",
                ":!PEERS.md", ":!peers.png", ":!RESULTS.md")
    return (git("rev-parse", "--short", "HEAD") or "unknown") + (" + local changes" if dirty
                                                                  else "")


def setups_markdown(names: list[str]) -> str:
    lines = ["| setup | system | how it runs |", "|---|---|---|"]
    for name in names:
        s = BY_NAME[name]
        env = ", ".join(f"`{k}={v}`" for k, v in s.env.items()
                        if k not in ("BENCH_PACKAGE", "BENCH_BROKER"))
        lines.append(f"| {name} | {SYSTEMS[s.system][0]} | {s.how}"
                     f"{'; env ' + env if env else ''} |")
    return "\n".join(lines)


def report(runs: list[Run], args: argparse.Namespace, facts: dict[str, Any], commit: str,
           elapsed: float) -> None:
    summaries = summarize(runs)
    lines = [r.line() for r in ratios(summaries, runs)]
    failures = [f"round {r.round}, {r.setup}: {r.error}" for r in runs if r.error]
    medians = text_table(summaries, "median")
    lpush = [r.lpush for r in runs if r.lpush]
    reference = (f"raw redis-py LPUSH of celeriac's message bytes, sequential: "
                 f"{statistics.median(lpush):,.0f}/s (median of {len(lpush)})" if lpush
                 else "raw LPUSH not measured (no celeriac Redis setup ran)")
    print(f"\n{facts.get('machine', '')}\n\nmedian of {args.rounds} round(s), "
          f"{args.tasks:,} tasks, {args.round_trips:,} round trips "
          f"(* = the system's best setup)\n{medians}\n{reference}")
    if args.rounds > 1:
        print(f"\nbest of {args.rounds} rounds\n{text_table(summaries, 'best')}")
    print("\n" + "\n".join(lines + failures))
    print(f"\ntotal time {elapsed:.0f}s")
    if args.no_write:
        return
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    mode = "quick" if args.quick else "full"
    chart(summaries, statistics.median(lpush) if lpush else None, HERE / "peers.png",
          f"celeriac (blue) vs Celery (red) and peers (grey), same Redis, 2 cores, "
          f"{args.tasks:,} tasks ({mode} mode, medians of {args.rounds})")
    versions = ", ".join(f"{k} {v}" for k, v in facts["versions"].items())
    if facts.get("load_before", 0.0) > 0.7:
        loaded = ("The machine was shared with other jobs while this ran (see the load "
                  "average), so absolute numbers are noisy; every setup ran in the same "
                  "session against the same Redis, which keeps the ratios meaningful. "
                  "Re-run on a quiet machine for reference numbers.")
    else:
        loaded = "The machine was quiet when the run started."
    head = (f"Produced by `python bench/peers.py{' --quick' if args.quick else ''}` on "
            f"{when} at commit {commit}, in {elapsed / 60:.1f} minutes: {mode} mode, "
            f"{args.tasks:,} tasks (+100 warm-up enqueues drained with them), "
            f"{args.round_trips:,} round trips, {args.rounds} round(s).\n\n"
            f"Machine: {facts.get('machine', 'unknown')}.\n\nVersions: {versions}.\n\n"
            f"{loaded}")
    ratio_block = "\n".join(f"* {line}" for line in lines + failures)
    names = list(dict.fromkeys(r.setup for r in runs))
    body = [f"# celeriac vs every peer, one run (`bench/peers.py`)\n\n{head}",
            "## Headline (medians; each system's best setup, and celeriac's defaults)\n\n"
            + summary_markdown(headline(summaries)) + f"\n\nReference: {reference}.",
            f"## Ratios\n\n{ratio_block}",
            "![bar chart of the headline setups](peers.png)",
            "## Every setup (medians; `*` = the system's best)\n\n"
            + summary_markdown(summaries)]
    if args.rounds > 1:
        body.append(f"## Every setup, best of {args.rounds} rounds\n\n"
                    + summary_markdown(summaries, "best"))
    body += [f"## Every round, in the order run\n\n{runs_markdown(runs)}",
             f"## How each setup runs\n\n{setups_markdown(names)}\n\n"
             "Why these candidates: see `bench/README.md` (\"Peers: how each is set up\").",
             METHOD]
    (HERE / "PEERS.md").write_text("\n\n".join(body) + "\n")
    section = (f"## celeriac vs every peer (`bench/peers.py`)\n\n{when}, commit {commit}, "
               f"{mode} mode ({args.tasks:,} tasks, {args.rounds} round(s)). "
               f"Machine: {facts.get('machine', 'unknown')}. {loaded}\n\n"
               + summary_markdown(headline(summaries)) + f"\n\nReference: {reference}.\n\n"
               f"{ratio_block}\n\n"
               "Every setup, every round, versions and method: [PEERS.md](PEERS.md).\n\n"
               "![bar chart](peers.png)")
    results = HERE / "RESULTS.md"
    old = results.read_text() if results.exists() else "# Benchmark results\n"
    results.write_text(replace_section(old, "peers.py", section))
    print(f"wrote {HERE / 'PEERS.md'}, {HERE / 'peers.png'} and a section of {results}")
