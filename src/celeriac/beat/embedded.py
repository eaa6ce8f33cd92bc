"""``worker -B``: a beat scheduler in a thread of the worker's supervisor.

Because schedulers coordinate through the schedule store, every worker may
run with ``-B``; one of them holds the lease and does the work.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..signals import beat_embedded_init
from .scheduler import Scheduler, scheduler_class

logger = logging.getLogger("celeriac.beat")


def start_embedded(app: Any, stop_event: threading.Event, *,
                   scheduler: Scheduler | None = None) -> threading.Thread:
    """Start a scheduler thread that runs until ``stop_event`` is set; return the thread."""
    sched = scheduler or scheduler_class(app.conf.get("beat_scheduler"))(app)

    def main() -> None:
        beat_embedded_init.send(sender=sched)
        try:
            sched.run(stop_event)
        except Exception:
            logger.exception("beat: embedded scheduler stopped")

    thread = threading.Thread(target=main, name="celeriac-beat", daemon=True)
    thread.start()
    return thread
