"""The peer benchmark's arithmetic and bookkeeping on fixed inputs (no timing, no services).

Covers ``bench/peers_report.py`` (medians, best setups, ratios, the RESULTS.md
section), the ``/proc`` parsers in ``bench/benchlib.py`` and the run order and
command lines of ``bench/peers.py`` / ``bench/peers_systems.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import benchlib  # noqa: E402
import peers  # noqa: E402
import peers_report as pr  # noqa: E402
from peers_systems import BY_NAME  # noqa: E402


def run(setup: str, system: str, round_no: int = 1, **metrics: float) -> pr.Run:
    return pr.Run(setup, system, round_no, **metrics)  # type: ignore[arg-type]


def test_percentile_is_nearest_rank() -> None:
    samples = [float(v) for v in range(100, 0, -1)]
    assert pr.percentile(samples, 50) == 50.0
    assert pr.percentile(samples, 99) == 99.0
    assert pr.percentile([3.0], 99) == 3.0


def test_summary_takes_medians_and_best_and_skips_failed_rounds() -> None:
    runs = [run("a", "celery", 1, drain=100.0, p50_ms=2.0),
            run("a", "celery", 2, drain=300.0, p50_ms=1.0),
            run("a", "celery", 3, drain=200.0, p50_ms=4.0),
            pr.Run("a", "celery", 4, drain=9999.0, error="TimeoutError")]
    [s] = pr.summarize(runs)
    assert (s.rounds, s.failed) == (4, 1)
    assert s.median["drain"] == 200.0 and s.best["drain"] == 300.0
    assert s.median["p50_ms"] == 2.0 and s.best["p50_ms"] == 1.0  # lower is better
    assert s.median["rss_mb"] is None


def test_best_setup_per_system_is_the_highest_median_drain() -> None:
    summaries = pr.summarize([run("c1", "celery", drain=100.0), run("c2", "celery", drain=150.0),
                              run("r1", "rq", drain=50.0), pr.Run("r2", "rq", 1, error="x")])
    best = pr.best_per_system(summaries)
    assert best["celery"].setup == "c2" and best["rq"].setup == "r1"


def fixed_runs() -> list[pr.Run]:
    return [
        run("celeriac-default", "celeriac", drain=6000.0, enqueue=8000.0, lpush=10000.0,
            p50_ms=0.9, p99_ms=3.0, pss_mb=40.0, cpu_us=100.0),
        run("celeriac-solo", "celeriac", drain=12000.0, enqueue=8100.0),
        run("celery-solo", "celery", drain=1000.0, enqueue=2000.0, p50_ms=2.0, pss_mb=80.0,
            cpu_us=500.0),
        run("celery-prefork", "celery", drain=900.0, enqueue=2100.0, pss_mb=50.0),
        run("huey", "huey", drain=3000.0, enqueue=9000.0),
        run("sqlite", "celeriac-sqlite", drain=1500.0),
    ]


def test_ratios_compare_the_default_with_each_systems_best() -> None:
    runs = fixed_runs()
    lines = {r.what.split(" (")[0]: r for r in pr.ratios(pr.summarize(runs), runs)}
    assert lines["drain: celeriac default / Celery best"].value == 6.0
    assert lines["drain: celeriac default / Celery best"].met() is True
    assert lines["drain: celeriac default / fastest peer"].value == 2.0  # huey, not celery
    assert lines["enqueue: celeriac default / fastest peer"].value == pytest.approx(8000 / 9000)
    assert lines["enqueue: celeriac default delay() / raw redis-py LPUSH"].value == 0.8
    assert lines["enqueue: celeriac default delay() / raw redis-py LPUSH"].met() is False
    assert lines["round trip p50 of celeriac default"].met() is True
    assert lines["round trip p99 of celeriac default"].met() is False
    # Celery's smallest PSS is the prefork setup's, although solo is its best drain
    assert lines["worker PSS: celeriac default / Celery's smallest setup"].value == 0.8
    assert lines["drain: celeriac best"].value == 12.0
    assert lines["drain: celeriac SQLite default / Celery best on Redis"].value == 1.5
    assert lines["round trip p99 of celeriac default"].line() == (
        "round trip p99 of celeriac default: 3.00 ms (target <= 2.5: NOT met)")


def test_ratios_need_the_default_setup() -> None:
    runs = [run("celery-solo", "celery", drain=1000.0)]
    assert pr.ratios(pr.summarize(runs), runs) == []


def test_tables_mark_best_setups_and_say_na() -> None:
    summaries = pr.summarize([*fixed_runs(), pr.Run("rq", "rq", 1, error="boom")])
    table = pr.text_table(summaries)
    assert "celery-solo *" in table and "celery-prefork *" not in table
    assert "FAILED" in table.splitlines()[-1]
    assert "n/a" in pr.summary_markdown(summaries)
    assert [s.setup for s in pr.headline(summaries)] == [
        "celeriac-default", "celeriac-solo", "sqlite", "celery-solo", "huey"]


def test_replace_section_keeps_everything_else() -> None:
    original = "# Results\n\nintro\n\n## RabbitMQ\n\nnumbers\n"
    once = benchlib.replace_section(original, "peers.py", "## Peers\n\nv1")
    assert once.startswith("# Results\n\n<!-- peers.py: begin -->\n## Peers\n\nv1\n")
    assert once.endswith("intro\n\n## RabbitMQ\n\nnumbers\n")
    twice = benchlib.replace_section(once, "peers.py", "## Peers\n\nv2")
    assert "v1" not in twice and twice.count("<!-- peers.py: begin -->") == 1
    assert twice.replace("v2", "v1") == once
    assert benchlib.replace_section("", "x", "body") == "<!-- x: begin -->\nbody\n<!-- x: end -->\n"


def test_proc_parsers() -> None:
    rollup = ("55a000000000-7ffd0000 ---p 00000000 00:00 0   [rollup]\n"
              "Rss:               10240 kB\nPss:                4096 kB\n"
              "Pss_Anon:           2048 kB\nSwap:                  0 kB\n")
    assert benchlib.parse_smaps_rollup(rollup)["Rss"] == 10240
    assert benchlib.parse_smaps_rollup(rollup)["Pss"] == 4096
    stat = ("4242 (celery: worker (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 "
            f"{3 * benchlib.CLOCK_TICKS} {benchlib.CLOCK_TICKS} {2 * benchlib.CLOCK_TICKS} 0 20 0")
    assert benchlib.parse_stat_cpu(stat) == 6.0  # utime + stime + cutime + cstime


def test_plan_rotates_and_keeps_the_default_first_among_celeriac_setups() -> None:
    names = ["celery-solo-x2-p64", "celeriac-solo-x2-p64", "huey-process-w2",
             "celeriac-default", "rq-simple-x2"]
    rounds = peers.plan(names, 5)
    assert [r[0] for r in rounds] != [rounds[0][0]] * 5  # the order changes
    for order in rounds:
        assert sorted(order) == sorted(names)
        assert order.index("celeriac-default") < order.index("celeriac-solo-x2-p64")


def test_setup_commands_fill_in_placeholders() -> None:
    [argv1, argv2] = BY_NAME["rq-simple-x2"].commands("redis://h/14", "peers-ab12:")
    assert argv1[-1] == "peers-ab12:rq" and "redis://h/14" in argv1
    assert "peers1-peersab12" in argv1 and "peers2-peersab12" in argv2
    assert BY_NAME["celeriac-default"].commands("u", "p:")[0][-3:] == [
        "-A", "peerapps.celery_compat", "worker"]
