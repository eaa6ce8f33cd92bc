"""``/metrics``: the dashboard's view of the cluster in Prometheus' text format.

Series (gauges unless named ``_total``): ``celeriac_queue_messages{queue,
state}`` (ready, delayed, leased, dead), ``celeriac_queue_oldest_ready_seconds``,
``celeriac_queue_time_to_start_seconds{queue,quantile}`` (last hour, 0.5 and
0.95), ``celeriac_workers_up``, ``celeriac_tasks_finished{state}`` (last hour)
and the dashboard's own ``celeriac_dashboard_events_written_total`` and
``celeriac_dashboard_events_dropped_total``.
"""

from __future__ import annotations

import time
from typing import Any

from . import views


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def metrics_text(dashboard: Any, now: float | None = None) -> str:
    now = time.time() if now is None else now
    lines: list[str] = []

    def series(name: str, kind: str, doc: str, rows: list[tuple[dict[str, Any], float]]
               ) -> None:
        lines.append(f"# HELP {name} {doc}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in rows:
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{text}}} {value:g}" if text else f"{name} {value:g}")

    ws = views.workers(dashboard.app, dashboard.history, dashboard.ingestor, now)
    qs = views.queues(dashboard.app, dashboard.history, dashboard.config.queue_targets, ws,
                      now)
    series("celeriac_queue_messages", "gauge", "Messages in a queue by state.",
           [({"queue": q["queue"], "state": s}, float(q[s]))
            for q in qs for s in ("ready", "delayed", "leased", "dead")])
    series("celeriac_queue_oldest_ready_seconds", "gauge",
           "Age of the oldest ready message of a queue.",
           [({"queue": q["queue"]}, q["oldest_age"]) for q in qs if q["oldest_age"] is not None])
    series("celeriac_queue_time_to_start_seconds", "gauge",
           "Time from sent to started over the last hour.",
           [({"queue": q["queue"], "quantile": qt}, q[key]) for q in qs
            for qt, key in (("0.5", "time_to_start_p50"), ("0.95", "time_to_start_p95"))
            if q[key] is not None])
    series("celeriac_workers_up", "gauge", "Workers with a fresh heartbeat.",
           [({}, float(sum(1 for w in ws if w.get("online"))))])
    finished: dict[str, int] = {}
    for _, state, count in dashboard.history.throughput(now - 3600, 3600):
        finished[state] = finished.get(state, 0) + count
    series("celeriac_tasks_finished", "gauge", "Tasks finished in the last hour by state.",
           [({"state": s}, float(n)) for s, n in sorted(finished.items())])
    series("celeriac_dashboard_events_written_total", "counter",
           "Task events written to the history.", [({}, float(dashboard.ingestor.written))])
    series("celeriac_dashboard_events_dropped_total", "counter",
           "Task events dropped because the history writer fell behind.",
           [({}, float(dashboard.ingestor.dropped))])
    return "\n".join(lines) + "\n"
