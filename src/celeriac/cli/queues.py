"""The per-queue part of ``celeriac status``: depth, oldest age and time-to-start vs target.

For every queue a live node consumes, and every queue with a target in
``task_queue_targets``: messages ready, delayed, in flight (leased) and dead;
the age of the oldest ready message (``-`` where the broker cannot tell:
Redis); the 95th percentile and maximum time-to-start over the nodes' last
5 minutes (the worst node's); the target; and ``BREACHED`` when the p95 or the
oldest waiting message is over the target. ``status`` exits 1 when a queue is
breached.
"""

from __future__ import annotations

import time
from typing import Any

import click

from ..config.targets import describe, queue_targets


def queue_rows(app: Any, nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    targets = queue_targets(app.conf.task_queue_targets)
    names = sorted({q for n in nodes for q in n.get("queues", [])} | set(targets))
    now = time.time()
    rows = []
    for queue in names:
        stats = app.broker.stats(queue)
        seen = [n.get("time_to_start", {}).get(queue) or {} for n in nodes]
        p95s = [s["p95"] for s in seen if s.get("p95") is not None]
        maxes = [s["max"] for s in seen if s.get("max") is not None]
        oldest = None if stats.oldest_ready_at is None else max(0.0, now - stats.oldest_ready_at)
        target = targets.get(queue)
        p95 = max(p95s) if p95s else None
        breached = target is not None and ((p95 is not None and p95 > target)
                                           or (oldest is not None and oldest > target))
        rows.append({"queue": queue, "ready": stats.ready, "delayed": stats.delayed,
                     "in_flight": stats.leased, "dead": stats.dead,
                     "oldest_age": None if oldest is None else round(oldest, 3),
                     "p95_time_to_start": p95, "max_time_to_start": max(maxes) if maxes else None,
                     "starts": sum(s.get("count", 0) for s in seen),
                     "breaches": sum(s.get("breaches", 0) for s in seen),
                     "target": target, "breached": breached})
    return rows


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def print_rows(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    click.echo("\nqueue                      ready  delayed  in-flight  dead  oldest    "
               "p95-start  target  state")
    for r in rows:
        target = describe(r["target"]) if r["target"] is not None else "-"
        state = "BREACHED" if r["breached"] else ("OK" if r["target"] is not None else "-")
        click.echo(f"{r['queue'][:26]:<26} {r['ready']:>5}  {r['delayed']:>7}  "
                   f"{r['in_flight']:>9}  {r['dead']:>4}  {_secs(r['oldest_age']):<8}  "
                   f"{_secs(r['p95_time_to_start']):<9}  {target:<6}  {state}")
