"""Beat: the periodic-task scheduler service, safe to run on every node.

:mod:`.scheduler` is the loop (claims each fire in the schedule store before
sending it, so several schedulers send each run once); :mod:`.embedded` runs
it inside a worker (``worker -B``). What is scheduled and where it is stored
is :mod:`celeriac.schedules`; the ``beat`` and ``schedule`` commands are
:mod:`celeriac.cli.beat`. The names below are re-exported so the documented
``from celeriac.beat import ManualClock, MemoryStore, Scheduler`` keeps working.
"""

from __future__ import annotations

from ..brokers.memory.beat_store import MemoryStore
from ..schedules.clock import ManualClock, SystemClock
from ..schedules.editing import Schedules
from ..schedules.entries import EntrySpec, StoredEntry
from ..schedules.store import ScheduleStore
from ..schedules.stores import store_for_app
from .embedded import start_embedded
from .scheduler import Scheduler

__all__ = ["EntrySpec", "ManualClock", "MemoryStore", "ScheduleStore", "Scheduler", "Schedules",
           "StoredEntry", "SystemClock", "start_embedded", "store_for_app"]
