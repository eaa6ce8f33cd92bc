"""Turning ``bench/peers.py`` measurements into tables, ratios, Markdown and a chart.

Pure functions over :class:`Run` records (one per setup per round), so the
arithmetic is tested on fixed inputs (``tests/unit/test_bench_peers_report.py``).
Per setup, each metric is summarised as the median over rounds and the best
round (highest rate; lowest latency, memory or CPU). Each system's *best
setup* is its setup with the highest median drain. Ratios compare medians.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, fields
from pathlib import Path

#: metric -> (column title, format, higher is better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "enqueue": ("enqueue/s", "{:,.0f}", True),
    "drain": ("drain/s", "{:,.0f}", True),
    "p50_ms": ("p50 ms", "{:.2f}", False),
    "p99_ms": ("p99 ms", "{:.2f}", False),
    "rss_mb": ("RSS MB", "{:.1f}", False),
    "pss_mb": ("PSS MB", "{:.1f}", False),
    "cpu_us": ("CPU µs/task", "{:,.0f}", False),
}
#: systems that are not celeriac, in table order
PEERS = ("celery", "dramatiq", "huey", "arq", "rq")
DEFAULT = "celeriac-default"


@dataclass
class Run:
    """What one setup measured in one round (None: not measured or not available)."""

    setup: str
    system: str
    round: int
    enqueue: float | None = None
    lpush: float | None = None  # raw redis-py LPUSH/s of the same payload, same process
    drain: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    rss_mb: float | None = None
    pss_mb: float | None = None
    cpu_us: float | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Summary:
    """One setup over all its rounds."""

    setup: str
    system: str
    rounds: int
    failed: int
    median: dict[str, float | None]
    best: dict[str, float | None]


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarize(runs: list[Run]) -> list[Summary]:
    """One :class:`Summary` per setup, in first-seen order; failed rounds are left out."""
    by_setup: dict[str, list[Run]] = {}
    for run in runs:
        by_setup.setdefault(run.setup, []).append(run)
    out = []
    for name, group in by_setup.items():
        good = [r for r in group if r.error is None]
        median: dict[str, float | None] = {}
        best: dict[str, float | None] = {}
        for metric, (_, _, higher) in [*METRICS.items(), ("lpush", ("", "", True))]:
            values = [v for r in good if (v := getattr(r, metric)) is not None]
            median[metric] = statistics.median(values) if values else None
            best[metric] = (max(values) if higher else min(values)) if values else None
        out.append(Summary(name, group[0].system, len(group), len(group) - len(good), median,
                           best))
    return out


def best_per_system(summaries: list[Summary]) -> dict[str, Summary]:
    """system -> its setup with the highest median drain (setups that drained nothing
    are never best)."""
    best: dict[str, Summary] = {}
    for s in summaries:
        drain = s.median["drain"]
        if drain is None:
            continue
        current = best.get(s.system)
        if current is None or drain > (current.median["drain"] or 0):
            best[s.system] = s
    return best


@dataclass
class Ratio:
    what: str
    value: float
    target: str = ""  # e.g. ">= 5"; empty: informative only
    unit: str = "x"

    def met(self) -> bool | None:
        if not self.target:
            return None
        op, number = self.target.split()
        return self.value >= float(number) if op == ">=" else self.value <= float(number)

    def line(self) -> str:
        verdict = {None: "", True: f" (target {self.target}: met)",
                   False: f" (target {self.target}: NOT met)"}[self.met()]
        return f"{self.what}: {self.value:.2f}{self.unit}{verdict}"


def _ratio(what: str, a: float | None, b: float | None, target: str = "") -> Ratio | None:
    if a is None or not b:
        return None
    return Ratio(what, a / b, target)


def ratios(summaries: list[Summary], runs: list[Run]) -> list[Ratio]:
    """The comparisons issue 11 asks for, on medians (a missing input skips its line)."""
    by_name = {s.setup: s for s in summaries}
    best = best_per_system(summaries)
    default = by_name.get(DEFAULT)
    if default is None:
        return []
    dm = default.median
    celery = best.get("celery")
    peers = [best[p] for p in PEERS if p in best]
    fastest = max(peers, key=lambda s: s.median["drain"] or 0, default=None)
    fastest_enqueue = max(peers, key=lambda s: s.median["enqueue"] or 0, default=None)
    celery_pss = [s.median["pss_mb"] for s in summaries
                  if s.system == "celery" and s.median["pss_mb"] is not None]
    lpush = [r.enqueue / r.lpush for r in runs
             if r.setup == DEFAULT and r.error is None and r.enqueue and r.lpush]
    out: list[Ratio | None] = []
    if celery:
        out += [_ratio(f"drain: celeriac default / Celery best ({celery.setup})", dm["drain"],
                       celery.median["drain"], ">= 5"),
                _ratio(f"enqueue: celeriac default / Celery ({celery.setup})", dm["enqueue"],
                       celery.median["enqueue"]),
                _ratio(f"round trip p50: celeriac default / Celery best ({celery.setup})",
                       dm["p50_ms"], celery.median["p50_ms"]),
                _ratio(f"CPU per task: celeriac default / Celery best ({celery.setup})",
                       dm["cpu_us"], celery.median["cpu_us"])]
    if fastest:
        out.append(_ratio(f"drain: celeriac default / fastest peer ({fastest.setup})",
                          dm["drain"], fastest.median["drain"], ">= 1.5"))
    if fastest_enqueue:
        out.append(_ratio(f"enqueue: celeriac default / fastest peer ({fastest_enqueue.setup})",
                          dm["enqueue"], fastest_enqueue.median["enqueue"]))
    if lpush:
        out.append(Ratio("enqueue: celeriac default delay() / raw redis-py LPUSH (median of "
                         "per-round ratios)", statistics.median(lpush), ">= 0.9"))
    for metric, target in (("p50_ms", "<= 1.0"), ("p99_ms", "<= 2.5")):
        if dm[metric] is not None:
            out.append(Ratio(f"round trip {metric[:3]} of celeriac default", dm[metric], target,
                             " ms"))
    if celery_pss:
        out.append(_ratio("worker PSS: celeriac default / Celery's smallest setup", dm["pss_mb"],
                          min(celery_pss), "<= 1.0"))
    best_ours = best.get("celeriac")
    if celery and best_ours and best_ours.setup != DEFAULT:
        out.append(_ratio(f"drain: celeriac best ({best_ours.setup}) / Celery best",
                          best_ours.median["drain"], celery.median["drain"]))
    sqlite = best.get("celeriac-sqlite")
    if celery and sqlite:
        out.append(_ratio(f"drain: celeriac SQLite default / Celery best on Redis "
                          f"({celery.setup})", sqlite.median["drain"], celery.median["drain"],
                          ">= 1.0"))
    return [r for r in out if r is not None]


def _cell(metric: str, value: float | None) -> str:
    return "n/a" if value is None else METRICS[metric][1].format(value)


def rows(summaries: list[Summary], which: str = "median") -> list[list[str]]:
    """Table rows: setup (``*`` = its system's best), then each metric."""
    best = {s.setup for s in best_per_system(summaries).values()}
    out = []
    for s in summaries:
        values = getattr(s, which)
        name = s.setup + (" *" if s.setup in best else "")
        if s.failed == s.rounds:
            out.append([name] + ["FAILED"] * len(METRICS))
            continue
        out.append([name] + [_cell(m, values[m]) for m in METRICS])
    return out


def text_table(summaries: list[Summary], which: str = "median") -> str:
    head = ["setup", *(title for title, _, _ in METRICS.values())]
    body = rows(summaries, which)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = []
    for row in [head, *body]:
        lines.append("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                               for i, c in enumerate(row)))
    return "\n".join(lines)


def markdown_table(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---" if name in ("setup", "notes") else "---:" for name in head)
             + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def summary_markdown(summaries: list[Summary], which: str = "median") -> str:
    return markdown_table(["setup", *(title for title, _, _ in METRICS.values())],
                          rows(summaries, which))


def runs_markdown(runs: list[Run]) -> str:
    """Every round of every setup, in the order they ran."""
    body = []
    for r in runs:
        cells = [_cell(m, getattr(r, m)) for m in METRICS]
        body.append([str(r.round), r.setup, *cells,
                     "n/a" if r.lpush is None else f"{r.lpush:,.0f}",
                     r.error or "; ".join(r.notes)])
    return markdown_table(["round", "setup", *(t for t, _, _ in METRICS.values()),
                           "raw LPUSH/s", "notes"], body)


def headline(summaries: list[Summary]) -> list[Summary]:
    """celeriac default, then each system's best setup (celeriac's own best included)."""
    best = best_per_system(summaries)
    by_name = {s.setup: s for s in summaries}
    order = [by_name[DEFAULT]] if DEFAULT in by_name else []
    for system in ("celeriac", "celeriac-sqlite", *PEERS):
        if system in best and best[system] not in order:
            order.append(best[system])
    return order


def chart(summaries: list[Summary], lpush: float | None, path: Path, title: str) -> None:
    """A 2 x 3 bar chart of the headline setups (medians)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = headline(summaries)
    names = [s.setup for s in shown]
    colors = ["#1f5fa8" if s.system.startswith("celeriac") else
              "#c0504d" if s.system == "celery" else "#8c8c8c" for s in shown]
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    panels = [("enqueue (single calls/s, higher is better)", ["enqueue"]),
              ("drain (tasks/s, higher is better)", ["drain"]),
              ("delay().get() round trip p50 / p99 (ms, lower is better)", ["p50_ms", "p99_ms"]),
              ("worker PSS (MB, lower is better)", ["pss_mb"]),
              ("worker RSS (MB, lower is better)", ["rss_mb"]),
              ("worker CPU per task (µs, lower is better)", ["cpu_us"])]
    xs = list(range(len(names)))
    for ax, (panel, metrics) in zip(axes.flat, panels, strict=True):
        width = 0.8 / len(metrics)
        for k, metric in enumerate(metrics):
            values = [s.median[metric] or 0.0 for s in shown]
            offset = (k - (len(metrics) - 1) / 2) * width
            ax.bar([x + offset for x in xs], values, width, color=colors,
                   alpha=1.0 if k == 0 else 0.5, label=METRICS[metric][0])
            for x, s in zip(xs, shown, strict=True):
                if s.median[metric] is None:
                    ax.text(x + offset, 0, "n/a", ha="center", va="bottom", fontsize=7)
        if len(metrics) > 1:
            ax.legend(fontsize=8)
        if metrics == ["enqueue"] and lpush:
            ax.axhline(lpush, color="black", linestyle="--", linewidth=1)
            ax.text(len(names) - 0.5, lpush, "raw LPUSH", ha="right", va="bottom", fontsize=8)
        ax.set_title(panel, fontsize=10)
        ax.set_xticks(xs, names, rotation=30, ha="right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def as_dict(run: Run) -> dict[str, object]:
    return {f.name: getattr(run, f.name) for f in fields(run)}
