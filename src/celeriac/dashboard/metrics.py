"""``/metrics``: the monitoring series in Prometheus' text format, plus the dashboard's own.

The series are those of celeriac's exporter (:mod:`celeriac.metrics.exporter`,
docs/monitoring.md): ``celeriac_tasks_total{name,state}``, task run time and
time-to-start histograms, ``celeriac_queue_messages{queue,state}``, oldest
waiting message, time-to-start targets, p95 and breaches, and per worker
``celeriac_worker_up``/``_active_tasks``/``_processed_tasks``; fed by the events
the dashboard receives. The dashboard adds
``celeriac_dashboard_events_written_total`` and
``celeriac_dashboard_events_dropped_total`` (its history writer).
"""

from __future__ import annotations

from typing import Any


def metrics_text(dashboard: Any) -> str:
    from prometheus_client import generate_latest

    text = generate_latest(dashboard.exporter.registry).decode() if (
        dashboard.exporter is not None) else ""
    own = [
        ("celeriac_dashboard_events_written_total", "Task events written to the history.",
         dashboard.ingestor.written),
        ("celeriac_dashboard_events_dropped_total",
         "Task events dropped because the history writer fell behind.",
         dashboard.ingestor.dropped),
    ]
    for name, doc, value in own:
        text += f"# HELP {name} {doc}\n# TYPE {name} counter\n{name} {float(value):g}\n"
    return text
