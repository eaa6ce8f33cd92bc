"""``--autoscale=max,min``: how many prefork children to run for the current load.

Once a second the autoscaler reads the ready count of the worker's queues
(``broker.stats``). It grows straight to ``min(max, running + ready)`` when
messages wait and every child is busy, and shrinks by one child per
:data:`KEEPALIVE` seconds while queues are empty and children idle, never
below ``min``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .. import retry
from ..exceptions import OperationalError
from .outage import QUICK_CALL

if TYPE_CHECKING:
    from ..app.base import Celery

logger = logging.getLogger("celeriac.worker")

KEEPALIVE = 5.0
CHECK_EVERY = 1.0


def parse_autoscale(value: str | None) -> tuple[int, int] | None:
    """``"10,3"`` -> (10, 3); ``"10"`` -> (10, 0)... at least one child always runs."""
    if not value:
        return None
    parts = [p.strip() for p in str(value).split(",") if p.strip()]
    try:
        high = int(parts[0])
        low = int(parts[1]) if len(parts) > 1 else 0
    except (ValueError, IndexError):
        raise ValueError(f"--autoscale expects max,min, not {value!r}") from None
    high, low = max(high, low), min(high, low)
    return max(1, high), max(1, low)


class Autoscaler:
    """Decides the target number of children."""

    def __init__(self, app: Celery, queues: list[str], high: int, low: int) -> None:
        self.app, self.queues = app, queues
        self.high, self.low = high, low
        self._next_check = 0.0
        self._idle_since: float | None = None
        self._target = low

    def ready(self) -> int:
        broker = self.app.broker
        total = 0
        for queue in self.queues:
            try:
                with retry.quick(QUICK_CALL):
                    total += broker.stats(queue).ready
            except OperationalError as exc:  # an outage: logged once by the process's watch
                logger.debug("autoscale: cannot read stats of %s: %s", queue, exc)
            except Exception as exc:
                logger.warning("autoscale: cannot read stats of %s: %s", queue, exc)
        return total

    def decide(self, running: int, busy: int) -> int:
        now = time.monotonic()
        if now < self._next_check:
            return self._target
        self._next_check = now + CHECK_EVERY
        waiting = self.ready()
        if waiting and busy >= running:
            self._idle_since = None
            grown = min(self.high, running + waiting)
            if grown > running:
                logger.info("autoscale: %d -> %d children (%d waiting)", running, grown, waiting)
            self._target = max(self._target, grown)
            return self._target
        if waiting or busy >= running:
            self._idle_since = None
            return self._target
        if self._idle_since is None:
            self._idle_since = now
        if now - self._idle_since >= KEEPALIVE and self._target > self.low:
            self._target = max(self.low, min(self._target, running) - 1)
            self._idle_since = now
            logger.info("autoscale: shrinking to %d children", self._target)
        return self._target
