"""Beat: the periodic-task scheduler service, safe to run on every node.

:mod:`.scheduler` is the loop (claims each fire in the schedule store before
sending it, so several schedulers send each run once); :mod:`.embedded` runs
it inside a worker (``worker -B``). What is scheduled and where it is stored
is :mod:`celeriac.schedules`; the ``beat`` and ``schedule`` commands are
:mod:`celeriac.cli.beat`.
"""

from __future__ import annotations

from .embedded import start_embedded
from .scheduler import Scheduler

__all__ = ["Scheduler", "start_embedded"]
