"""What each page shows, gathered from the history, the broker, the result store and beat.

Pure data (dicts and lists) shared by the HTML pages and the JSON API:
:func:`overview`, :func:`queues`, :func:`workers`, :func:`schedules` and
:func:`throughput_chart` (an SVG bar chart drawn on the server, so the page
needs no charting script).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from ..worker.health import read_nodes
from .history import HistoryStore, TaskFilter
from .ingest import Ingestor

WORKER_ALIVE = 30.0


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(pct / 100.0 * len(ordered)) - 1))
    return ordered[index]


def throughput(history: HistoryStore, span: float, bucket: float,
               now: float | None = None) -> list[dict[str, Any]]:
    """Per bucket: start, succeeded, failed (FAILURE, REJECTED, REVOKED), failure rate."""
    now = time.time() if now is None else now
    start = (now - span) // bucket * bucket
    buckets = {start + i * bucket: {"start": start + i * bucket, "succeeded": 0, "failed": 0}
               for i in range(int(span // bucket) + 1)}
    for begin, state, count in history.throughput(start, bucket):
        slot = buckets.get(begin)
        if slot is None:
            continue
        slot["succeeded" if state == "SUCCESS" else "failed"] += count
    out = []
    for slot in buckets.values():
        total = slot["succeeded"] + slot["failed"]
        slot["failure_rate"] = slot["failed"] / total if total else 0.0
        out.append(slot)
    return out


def throughput_chart(series: list[dict[str, Any]], width: int = 720, height: int = 120,
                     label: str = "") -> str:
    """An inline SVG of stacked bars (succeeded green, failed red)."""
    peak = max([s["succeeded"] + s["failed"] for s in series] + [1])
    bar = width / max(1, len(series))
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{label}" preserveAspectRatio="none">']
    for i, s in enumerate(series):
        x = i * bar
        ok = s["succeeded"] / peak * (height - 4)
        bad = s["failed"] / peak * (height - 4)
        when = time.strftime("%H:%M", time.gmtime(s["start"]))
        title = f"{when} UTC: {s['succeeded']} succeeded, {s['failed']} failed"
        parts.append(f'<g><title>{title}</title>'
                     f'<rect x="{x:.1f}" y="{height - ok:.1f}" width="{max(bar - 1, 1):.1f}" '
                     f'height="{ok:.1f}" class="ok"/>'
                     f'<rect x="{x:.1f}" y="{height - ok - bad:.1f}" '
                     f'width="{max(bar - 1, 1):.1f}" height="{bad:.1f}" class="bad"/></g>')
    parts.append("</svg>")
    return "".join(parts)


def workers(app: Any, history: HistoryStore, ingestor: Ingestor | None,
            now: float | None = None) -> list[dict[str, Any]]:
    """Every worker seen by heartbeat record (celeriac) or event (Celery and celeriac)."""
    now = time.time() if now is None else now
    merged: dict[str, dict[str, Any]] = {}
    for info in (ingestor.worker_list() if ingestor is not None else []):
        merged[info["hostname"]] = {
            "hostname": info["hostname"], "pid": info.get("pid"), "pool": None,
            "concurrency": None, "queues": [], "processed": info.get("processed"),
            "active": info.get("active"), "loadavg": info.get("loadavg"),
            "last_heartbeat": info.get("last_heartbeat"), "software": " ".join(
                str(info.get(k) or "") for k in ("sw_ident", "sw_ver")).strip(),
            "online": bool(info.get("online"))}
    try:
        nodes = read_nodes(app)
    except Exception:
        nodes = []
    for node in nodes:
        entry = merged.setdefault(node["hostname"], {"hostname": node["hostname"],
                                                     "software": "celeriac", "loadavg": None})
        seen = float(node.get("timestamp") or 0)
        entry.update({
            "pid": node.get("pid"), "pool": node.get("pool"),
            "concurrency": node.get("concurrency"), "queues": list(node.get("queues") or []),
            "processed": node.get("processed"), "active": node.get("busy"),
            "last_heartbeat": max(seen, float(entry.get("last_heartbeat") or 0)),
            "started_at": node.get("started_at"), "online": now - seen <= WORKER_ALIVE})
    for entry in merged.values():
        last = entry.get("last_heartbeat")
        entry["heartbeat_age"] = None if not last else max(0.0, now - float(last))
        if last and now - float(last) > WORKER_ALIVE:
            entry["online"] = False
        entry["active_tasks"] = [
            {"task_id": r.task_id, "name": r.name, "started_at": r.started_at}
            for r in history.page(TaskFilter(states=["STARTED"], worker=entry["hostname"]),
                                  20)[0]]
    return sorted(merged.values(), key=lambda w: (not w.get("online"), w["hostname"]))


def queues(app: Any, history: HistoryStore, targets: Mapping[str, float],
           worker_list: list[dict[str, Any]], now: float | None = None
           ) -> list[dict[str, Any]]:
    """Depth, oldest message age, time-to-start p50/p95 against target, consumers."""
    now = time.time() if now is None else now
    broker = app.broker
    names = set(broker.queues()) | set(targets)
    names.add(str(app.conf.get("task_default_queue") or "celery"))
    for w in worker_list:
        names.update(w.get("queues") or [])
    out = []
    for name in sorted(names):
        stats = broker.stats(name)
        oldest = getattr(stats, "oldest_ready_at", None)
        waits = history.times_to_start(name, now - 3600)
        p50, p95 = percentile(waits, 50), percentile(waits, 95)
        target = targets.get(name)
        out.append({
            "queue": name, "ready": stats.ready, "delayed": stats.delayed,
            "leased": stats.leased, "dead": stats.dead,
            "oldest_age": None if oldest is None else max(0.0, now - float(oldest)),
            "time_to_start_p50": p50, "time_to_start_p95": p95, "samples": len(waits),
            "target": target,
            "on_target": None if target is None or p95 is None else p95 <= target,
            "consumers": [w["hostname"] for w in worker_list
                          if w.get("online") and name in (w.get("queues") or [])],
        })
    return out


def schedules(app: Any) -> list[dict[str, Any]]:
    out = []
    for info in app.schedules.list():
        out.append({
            "name": info.name, "task": info.task, "schedule": info.schedule,
            "args": list(info.args), "kwargs": dict(info.kwargs), "enabled": info.enabled,
            "last_run_at": info.last_run_at.timestamp() if info.last_run_at else None,
            "next_run_at": info.next_run_at.timestamp() if info.next_run_at else None,
            "total_run_count": info.total_run_count, "source": info.source,
        })
    return out


def overview(app: Any, history: HistoryStore, ingestor: Ingestor | None,
             targets: Mapping[str, float], now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    live = throughput(history, 3600, 60, now)
    day = throughput(history, 86400, 3600, now)
    ws = workers(app, history, ingestor, now)
    qs = queues(app, history, targets, ws, now)
    done = sum(s["succeeded"] + s["failed"] for s in day)
    failed = sum(s["failed"] for s in day)
    return {
        "live": live, "day": day, "workers_up": sum(1 for w in ws if w.get("online")),
        "workers": len(ws), "backlog": sum(q["ready"] for q in qs),
        "queues": qs, "finished_24h": done,
        "failure_rate_24h": failed / done if done else 0.0,
        "events_dropped": ingestor.dropped if ingestor is not None else 0,
    }
