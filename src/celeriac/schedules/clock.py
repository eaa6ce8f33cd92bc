"""Injectable clocks for beat (kept at their documented path; they live in :mod:`celeriac.clock`).

Every time-dependent part of beat takes a :class:`Clock` (``now()`` returns an
aware UTC datetime, ``sleep(seconds)`` waits). Without one it uses
:class:`ProcessClock`, the process's clock (the system clock unless a test
installed a :class:`ControlledClock`); :class:`ManualClock` runs hours of
schedule in milliseconds in a scheduler driven by hand.
"""

from __future__ import annotations

from ..clock import UTC, Clock, ControlledClock, ManualClock, ProcessClock, SystemClock

__all__ = ["UTC", "Clock", "ControlledClock", "ManualClock", "ProcessClock", "SystemClock"]
