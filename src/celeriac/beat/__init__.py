"""Beat: the periodic-task scheduler that is safe to run on every node.

Layout: :mod:`.cron` (crontab arithmetic, DST rule), :mod:`.clock` (injectable
clocks), :mod:`.entries` (entry specs and their JSON form), :mod:`.policy`
(missed-run policy, fire ids), :mod:`.store` (store interface + memory store),
:mod:`.sqlite_store`, :mod:`.redis_store`, :mod:`.scheduler` (the loop),
:mod:`.api` (``Schedules``, the runtime-editing API), :mod:`.embedded`
(``worker -B``) and :mod:`.cli` (``beat`` and ``schedule`` commands).
Names are exported lazily so ``celeriac.schedules`` can import :mod:`.cron`
without pulling in the scheduler.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Scheduler": "celeriac.beat.scheduler",
    "Schedules": "celeriac.beat.api",
    "EntrySpec": "celeriac.beat.entries",
    "StoredEntry": "celeriac.beat.entries",
    "ScheduleStore": "celeriac.beat.store",
    "MemoryStore": "celeriac.beat.store",
    "store_for_app": "celeriac.beat.stores",
    "SystemClock": "celeriac.beat.clock",
    "ManualClock": "celeriac.beat.clock",
    "start_embedded": "celeriac.beat.embedded",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'celeriac.beat' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
