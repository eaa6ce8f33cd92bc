"""Run the reliability suite: every scenario on every broker, celeriac and Celery 5.7.

Usage (from the repository root)::

    python bench/reliability/run.py                    # every broker, full size (~20 min)
    python bench/reliability/run.py --quick            # smaller loads, for development
    python bench/reliability/run.py --broker redis     # one broker (repeat for more)
    python bench/reliability/run.py --scenarios fuzz,outage3 --no-celery --no-write
    python bench/reliability/run.py --broker redis-cluster --broker redis-sentinel \
        --scenarios failover,failover-wait,kill-children   # replicated Redis

Per scenario it prints accepted / lost / duplicated (and why) / dead-lettered /
time to recover, and writes one markdown section per broker into
``docs/reliability.md`` (``--no-write`` skips it; ``--json FILE`` saves every
figure). Servers are private: each scenario starts its own Redis, PostgreSQL or
RabbitMQ node on a free port in a temporary directory (:mod:`servers`), never
the shared ones. Celery 5.7 runs the scenarios it can (kill -9, broker restart,
malformed messages, SIGSTOP) on Redis and RabbitMQ, and the failover on Sentinel
(it has no Redis Cluster transport).
Exit status 1 when a celeriac figure is not ``ok``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import beat_failover  # noqa: E402
import failover  # noqa: E402
import malformed  # noqa: E402
import outages  # noqa: E402
import report  # noqa: E402
import scenarios  # noqa: E402
from counting import Figures  # noqa: E402
from scenarios import Context  # noqa: E402
from servers import SERVERS  # noqa: E402

BROKERS = ("sqlite", "redis", "postgres", "amqp", "redis-cluster", "redis-sentinel")
#: Celery 5.7's brokers in this suite
CELERY_BROKERS = ("redis", "amqp", "redis-sentinel")
NEEDS = {"redis": "redis-server", "redis-cluster": "redis-server",
         "redis-sentinel": "redis-server", "postgres": "/usr/lib/postgresql",
         "amqp": "/usr/lib/rabbitmq/bin/rabbitmq-server"}


def beat(ctx: Context, system: str) -> Figures:
    """Three ``celeriac beat`` processes, the lease holder killed (``beat_failover``)."""
    label = "3 schedulers, leader killed"
    if ctx.broker == "amqp":
        figures = Figures(label, ctx.broker, system, dead_lettered=None)
        figures.notes.append("n/a: RabbitMQ cannot hold beat's schedule; beat then uses "
                             "beat_schedule_store (SQLite, Redis or PostgreSQL: see those rows)")
        return figures
    server = SERVERS[ctx.broker]()
    try:
        server.start()
        url = "sqlite" if ctx.broker == "sqlite" else server.url
        result = beat_failover.run(url, schedulers=3, kills=1)
    finally:
        server.close()
    figures = Figures(label, ctx.broker, system, accepted=result["expected"],
                      lost=result["lost"],
                      duplicated=result["duplicated"] + result["duplicated_at_kill"],
                      dead_lettered=None, seconds=result["seconds"])
    figures.explained = {k: v for k, v in (("kill", result["duplicated_at_kill"]),
                                           ("unexplained", result["duplicated"])) if v}
    takeover = [t for t in result["takeover"] if t == t]
    figures.recover_s = round(max(takeover), 1) if takeover else None
    figures.notes.append(f"{result['kills']} leader kill(s); fires expected "
                         f"{result['expected']}, skipped with a warning "
                         f"{result['skipped_with_warning']}, longest gap "
                         f"{result['max_gap']:.1f}s")
    figures.ok = not (result["lost"] or result["duplicated"] or result["stuck_claims"])
    return figures


Scenario = Callable[[Context, str], Figures]
BOTH, CELERIAC, CELERY = ("celeriac", "celery"), ("celeriac",), ("celery",)
#: name -> (function, the systems that run it; Celery only on CELERY_BROKERS)
SCENARIOS: dict[str, tuple[Scenario, tuple[str, ...]]] = {
    "kill-children": (scenarios.kill_children, BOTH),
    "kill-supervisor": (scenarios.kill_supervisor, BOTH),
    "outage3": (lambda ctx, system: outages.broker_outage(ctx, system, 3.0), BOTH),
    "outage60": (lambda ctx, system: outages.broker_outage(ctx, system, 60.0), BOTH),
    "fuzz": (malformed.fuzz_messages, BOTH),
    "fuzz-celery": (malformed.fuzz_without_stoppers, CELERY),
    "gil": (scenarios.gil_holder, CELERIAC),
    "sigstop": (scenarios.sigstop, BOTH),
    "beat": (beat, CELERIAC),
    "memory": (scenarios.memory, CELERIAC),
    "failover": (lambda ctx, system: failover.master_failover(ctx, system, False), BOTH),
    "failover-wait": (lambda ctx, system: failover.master_failover(ctx, system, True), CELERIAC),
}


def available(broker: str) -> str | None:
    """None when the broker's server can be started here, else why not."""
    need = NEEDS.get(broker)
    if need is None or shutil.which(need) or Path(need).exists():
        return None
    return f"{need} not found"


def versions() -> dict[str, str]:
    import celeriac

    out = {"celeriac": celeriac.__version__}
    try:
        import celery

        out["Celery"] = celery.__version__
    except ImportError:
        pass
    for name, cmd in (("Redis", ["redis-server", "--version"]),
                      ("RabbitMQ", ["rabbitmqctl", "version"])):
        try:
            text = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        word = next((w for w in text.replace("v=", " ").split() if w[:1].isdigit()), None)
        if word:
            out[name] = word
    pg = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if pg:
        out["PostgreSQL"] = pg[-1].parent.parent.name
    return out


def run_broker(ctx: Context, names: list[str], celery: bool) -> list[Figures]:
    results: list[Figures] = []
    for name in names:
        function, systems = SCENARIOS[name]
        for system in systems:
            if system == "celery" and not (celery and ctx.broker in CELERY_BROKERS):
                continue
            ctx.say(f"[{ctx.broker}] {name} ({system})")
            began = time.monotonic()
            try:
                figures = function(ctx, system)
            except Exception as exc:  # a scenario that cannot finish is a result too
                figures = Figures(name, ctx.broker, system, ok=False)
                figures.notes.append(f"scenario failed: {type(exc).__name__}: "
                                     f"{str(exc)[:300]}")
            figures.seconds = figures.seconds or round(time.monotonic() - began, 1)
            results.append(figures)
            ctx.say(report.table([figures]).split("\n", 1)[1])
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", action="append", choices=BROKERS,
                        help="broker to run (repeatable; default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller loads")
    parser.add_argument("--scenarios", help=f"comma-separated subset of {', '.join(SCENARIOS)}")
    parser.add_argument("--no-celery", action="store_true", help="skip Celery 5.7's runs")
    parser.add_argument("--no-write", action="store_true", help="do not touch the docs")
    parser.add_argument("--docs", default=str(HERE.parents[1] / "docs" / "reliability.md"))
    parser.add_argument("--json", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    names = args.scenarios.split(",") if args.scenarios else list(SCENARIOS)
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    brokers = args.broker or list(BROKERS)
    command = "python bench/reliability/run.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    say = lambda text: print(text, flush=True)  # noqa: E731
    ctx_root = Context(brokers[0]).root
    logging.basicConfig(filename=str(ctx_root / "suite.log"), level=logging.WARNING)
    say(f"reliability suite: {', '.join(brokers)}; logs and projects in {ctx_root}")
    everything: list[Figures] = []
    found = versions()
    for broker in brokers:
        missing = available(broker)
        if missing:
            say(f"[{broker}] skipped: {missing}")
            continue
        ctx = Context(broker, quick=args.quick, say=say, root=ctx_root / broker)
        ctx.root.mkdir(parents=True, exist_ok=True)
        results = run_broker(ctx, names, celery=not args.no_celery)
        everything += results
        say(f"\n== {broker} ==\n{report.table(results)}\n")
        if not args.no_write:
            report.write_section(Path(args.docs), broker,
                                 report.markdown(broker, results, command, found))
    if args.json:
        Path(args.json).write_text(json.dumps([f.as_dict() for f in everything], indent=2))
    return 0 if all(f.ok for f in everything if f.system == "celeriac") else 1


if __name__ == "__main__":
    raise SystemExit(main())
