"""Feeding the history from the broker's event stream (``app.events.Receiver``).

:func:`start_receiver` runs Celery's event receiver (celeriac's, on any broker)
in a thread that hands every event to the dashboard's
:class:`~celeriac.dashboard.ingest.Ingestor` and to its Prometheus
:class:`~celeriac.metrics.exporter.Exporter` (the monitoring series); a broker that goes away is
retried every few seconds, with the failure logged once per outage. It
returns the function that stops it (the dashboard calls it at shutdown).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("celeriac.dashboard")

RETRY_AFTER = 2.0


def start_receiver(dashboard: Any) -> Callable[[], None]:
    """Receive events into the history (and the metrics) until the returned function runs."""
    stopping = threading.Event()
    current: list[Any] = []
    exporter = dashboard.exporter

    def handle(event: dict[str, Any]) -> None:
        dashboard.ingestor.handle(event)
        if exporter is not None:
            try:
                exporter.on_event(event)
            except Exception as exc:
                logger.debug("metrics could not take an event: %s", exc)

    def run() -> None:
        failing = False
        while not stopping.is_set():
            receiver = dashboard.app.events.Receiver(handlers={"*": handle})
            current[:] = [receiver]
            try:
                receiver.capture(limit=None, timeout=None, wakeup=True)
                failing = False
            except Exception as exc:
                if not failing:
                    logger.warning("Event receiver failed (%s); retrying every %.0f s",
                                   exc, RETRY_AFTER)
                failing = True
            stopping.wait(RETRY_AFTER)

    thread = threading.Thread(target=run, name="dashboard-events", daemon=True)
    thread.start()

    def stop() -> None:
        stopping.set()
        for receiver in current:
            receiver.should_stop = True
        thread.join(5.0)

    return stop
