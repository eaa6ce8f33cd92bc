"""The Prometheus exporter: metrics from events and broker statistics.

Counters and histograms are fed by events (received on the broker's broadcast
channel; a worker's own exporter keeps only its node's task events):

* ``celeriac_tasks_total{name, state}`` -- tasks reaching each state
  (``SENT``, ``RECEIVED``, ``STARTED``, ``SUCCESS``, ``FAILURE``, ``RETRY``,
  ``REJECTED``, ``REVOKED``);
* ``celeriac_task_runtime_seconds{name}`` -- run time of successful tasks;
* ``celeriac_task_time_to_start_seconds{queue, name}`` -- from when the
  message became ready to the start (celeriac workers' ``task-started`` events;
  where the worker could not tell, from the ``task-sent`` event when producers
  send it);
* ``celeriac_queue_time_to_start_breaches_total{queue}`` -- starts over the
  queue's target (``task_queue_targets``).

Gauges are read at each scrape: ``celeriac_queue_messages{queue, state}``
(``ready``, ``delayed``, ``in_flight``, ``dead``),
``celeriac_queue_oldest_ready_age_seconds{queue}`` (not on Redis: its ready
lists carry no time), ``celeriac_queue_time_to_start_target_seconds``,
``celeriac_queue_time_to_start_p95_seconds`` (last 5 minutes),
``celeriac_queue_time_to_start_breached`` (1 when the p95 or the oldest waiting
message is over target), and per worker ``celeriac_worker_up``,
``celeriac_worker_active_tasks``, ``celeriac_worker_processed_tasks``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..events.state import State
from ..worker.targets import TargetWatch

if TYPE_CHECKING:
    from ..app.base import Celery

logger = logging.getLogger("celeriac.metrics")

STATES = {"task-sent": "SENT", "task-received": "RECEIVED", "task-started": "STARTED",
          "task-succeeded": "SUCCESS", "task-failed": "FAILURE", "task-retried": "RETRY",
          "task-rejected": "REJECTED", "task-revoked": "REVOKED"}
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
           1800, 3600, 7200, 21600, float("inf"))


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        from ..exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("metrics need prometheus-client: pip install "
                                   "'celeriac[monitoring]'") from None
    return prometheus_client


class Exporter:
    """Collects the metrics of a cluster (or of one node: ``node``)."""

    def __init__(self, app: Celery, *, queues: Iterable[str] | None = None,
                 node: str | None = None) -> None:
        prom = _prometheus()
        self.app, self.node = app, node
        self.queues = list(queues) if queues else None
        self.state = State(max_tasks_in_memory=20000)
        self.watch = TargetWatch(app, log=False)
        self.registry = prom.CollectorRegistry()
        self.tasks = prom.Counter("celeriac_tasks", "Tasks reaching each state",
                                  ["name", "state"], registry=self.registry)
        self.runtime = prom.Histogram("celeriac_task_runtime_seconds",
                                      "Run time of successful tasks", ["name"],
                                      buckets=BUCKETS, registry=self.registry)
        self.time_to_start = prom.Histogram(
            "celeriac_task_time_to_start_seconds",
            "Seconds from when a message became ready to the start of its run",
            ["queue", "name"], buckets=BUCKETS, registry=self.registry)
        self.breaches = prom.Counter("celeriac_queue_time_to_start_breaches",
                                     "Starts over the queue's time-to-start target",
                                     ["queue"], registry=self.registry)
        self.registry.register(_Gauges(self))
        self._receiver: Any = None
        self._server: Any = None

    # -- events ----------------------------------------------------------------------
    def on_event(self, event: dict[str, Any]) -> None:
        kind = str(event.get("type", ""))
        if self.node is not None and kind.startswith("task-") and kind != "task-sent" \
                and event.get("hostname") != self.node:
            return
        task, _ = self.state.event(event)
        state = STATES.get(kind)
        if state is None or task is None:
            return
        name = task.name or "unknown"
        self.tasks.labels(name=name, state=state).inc()
        if kind == "task-succeeded" and isinstance(event.get("runtime"), (int, float)):
            self.runtime.labels(name=name).observe(float(event["runtime"]))
        tts = event.get("time_to_start")
        if kind == "task-started" and tts is None and task.sent is not None:
            # no measure from the worker (Redis: no publish time): since ``task-sent``
            tts = max(0.0, float(event.get("timestamp") or time.time()) - float(task.sent))
        if kind == "task-started" and isinstance(tts, (int, float)):
            queue = str(event.get("queue") or task.queue or "unknown")
            self.time_to_start.labels(queue=queue, name=name).observe(float(tts))
            self.watch.observe(queue, name, str(event.get("uuid")), float(tts))
            target = self.watch.targets.get(queue)
            if target is not None and tts > target:
                self.breaches.labels(queue=queue).inc()

    # -- running -----------------------------------------------------------------------
    def start(self, port: int, addr: str = "127.0.0.1") -> int:
        """Receive events on a thread and serve ``/metrics``; return the port."""
        prom = _prometheus()
        self._receiver = self.app.events.Receiver(handlers={"*": self.on_event})
        threading.Thread(target=self._capture, name="celeriac-metrics-events",
                         daemon=True).start()
        started = prom.start_http_server(port, addr=addr, registry=self.registry)
        self._server = started[0] if isinstance(started, tuple) else None
        bound = self._server.server_address[1] if self._server is not None else port
        logger.info("Prometheus metrics on http://%s:%s/metrics", addr, bound)
        return int(bound)

    def _capture(self) -> None:
        while self._receiver is not None and not self._receiver.should_stop:
            try:
                self._receiver.capture(wakeup=True)
            except Exception as exc:
                logger.warning("Metrics: receiving events failed (%s); retrying", exc)
                time.sleep(1.0)

    def stop(self) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        if self._server is not None:
            self._server.shutdown()

    def queue_names(self) -> list[str]:
        if self.queues is not None:
            return sorted(set(self.queues) | set(self.watch.targets))
        try:
            known = set(self.app.broker.queues())
        except Exception:
            known = set()
        return sorted(known | set(self.watch.targets) | {self.app.conf.task_default_queue})


class _Gauges:
    """Reads broker statistics and worker state at scrape time."""

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        ex = self.exporter
        messages = GaugeMetricFamily("celeriac_queue_messages", "Messages in a queue by state",
                                     labels=["queue", "state"])
        oldest = GaugeMetricFamily("celeriac_queue_oldest_ready_age_seconds",
                                   "Age of the oldest ready message", labels=["queue"])
        target = GaugeMetricFamily("celeriac_queue_time_to_start_target_seconds",
                                   "The queue's target max time-to-start", labels=["queue"])
        p95 = GaugeMetricFamily("celeriac_queue_time_to_start_p95_seconds",
                                "95th percentile time-to-start, last 5 minutes",
                                labels=["queue"])
        breached = GaugeMetricFamily("celeriac_queue_time_to_start_breached",
                                     "1 when the queue is over its time-to-start target",
                                     labels=["queue"])
        summary = ex.watch.summary()
        now = time.time()
        for queue in ex.queue_names():
            try:
                stats = ex.app.broker.stats(queue)
            except Exception as exc:
                logger.warning("Metrics: stats of queue %s failed: %s", queue, exc)
                continue
            for state, value in (("ready", stats.ready), ("delayed", stats.delayed),
                                 ("in_flight", stats.leased), ("dead", stats.dead)):
                messages.add_metric([queue, state], value)
            age = None if stats.oldest_ready_at is None else max(0.0, now - stats.oldest_ready_at)
            if age is not None:
                oldest.add_metric([queue], age)
            seen = summary.get(queue) or {}
            if seen.get("p95") is not None:
                p95.add_metric([queue], seen["p95"])
            goal = ex.watch.targets.get(queue)
            if goal is not None:
                target.add_metric([queue], goal)
                late = (seen.get("p95") or 0) > goal or (age or 0) > goal
                breached.add_metric([queue], 1.0 if late else 0.0)
        yield from (messages, oldest, target, p95, breached)
        up = GaugeMetricFamily("celeriac_worker_up", "1 while the worker's heartbeats arrive",
                               labels=["hostname"])
        active = GaugeMetricFamily("celeriac_worker_active_tasks", "Tasks running now",
                                   labels=["hostname"])
        processed = GaugeMetricFamily("celeriac_worker_processed_tasks",
                                      "Tasks the worker finished", labels=["hostname"])
        for worker in list(ex.state.workers.values()):
            if ex.node is not None and worker.hostname != ex.node:
                continue
            up.add_metric([worker.hostname], 1.0 if worker.alive else 0.0)
            active.add_metric([worker.hostname], float(worker.active or 0))
            processed.add_metric([worker.hostname], float(worker.processed or 0))
        yield from (up, active, processed)
