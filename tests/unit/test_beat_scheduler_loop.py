"""``Scheduler.run``: retries while the store is down, stops on the event, releases the lease."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any

from celeriac.beat.scheduler import Scheduler
from celeriac.brokers.memory.beat_store import MemoryStore
from celeriac.schedules.clock import ManualClock
from celeriac.schedules.entries import StoredEntry

UTC = timezone.utc


class Conf(dict):
    __getattr__ = dict.get


class FlakyStore(MemoryStore):
    """Unreachable for the first ``failures`` reads."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def get_entry(self, name: str) -> StoredEntry | None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("store unreachable")
        return super().get_entry(name)


class StoppingApp:
    def __init__(self, stop: threading.Event, wanted: int) -> None:
        self.conf = Conf(beat_schedule={"e": {"task": "t", "schedule": 2}})
        self.stop, self.wanted = stop, wanted
        self.sent: list[str] = []

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, *, task_id: str,
                  **options: Any) -> str:
        self.sent.append(task_id)
        if len(self.sent) >= self.wanted:
            self.stop.set()
        return task_id


def test_run_survives_an_unreachable_store_then_stops_and_releases() -> None:
    stop = threading.Event()
    app = StoppingApp(stop, wanted=3)
    store = FlakyStore(failures=3)
    clock = ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    sched = Scheduler(app, store, clock=clock, node_id="loop")
    sched.run(stop)
    assert store.failures == 0 and len(app.sent) == 3
    assert store.lease_holder(clock.now()) is None, "released on the way out"
    assert not sched.is_leader
