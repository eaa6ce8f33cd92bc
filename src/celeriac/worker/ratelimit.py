"""Task ``rate_limit`` for the whole fleet: Celery's rate strings and the broker's buckets.

Celery limits a task type per worker (an in-memory token bucket per worker
process) and keeps the messages that must wait in the worker's memory. celeriac
keeps one bucket per task name in the broker (:meth:`Broker.take_token`, key
``"task:<name>"``, capacity 1 as in Celery), so ``rate_limit="10/m"`` means ten a
minute across every worker on every host. A leased message that gets no token
goes straight back to the broker's delayed store (``release(not_before=...)``,
not counted as a failure), so nothing waits in worker memory and a worker that
dies holds nothing. Refused messages of one task are spread one token interval
apart, so a backlog comes back at about the rate it may run instead of all at
once.

``worker_disable_rate_limits = True`` turns the checks off, as in Celery.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ..exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from ..app.base import Celery
    from ..app.task import Task
    from ..brokers.base import Broker, Delivery

logger = logging.getLogger("celeriac.worker")

#: seconds per unit of a rate string, as Celery's ``celery.utils.time.rate``
UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
#: how long a message waits when the broker could not be asked (not counted as failed)
UNAVAILABLE_DELAY = 1.0


def parse_rate(value: Any) -> float:
    """Tasks per second of a Celery rate limit: ``"10/s"``, ``"100/m"``, ``"5/h"``, or a
    number (per second); 0.0 (no limit) for None, ``""`` and 0. Raises ValueError."""
    if value is None or value == "" or value == 0:
        return 0.0
    if isinstance(value, bool):
        raise ValueError(f"rate limit {value!r}: expected '<n>/s', '<n>/m', '<n>/h' or a number")
    if isinstance(value, (int, float)):
        number, unit = float(value), "s"
    elif isinstance(value, str):
        count, _, unit = value.strip().partition("/")
        unit = unit.strip() or "s"
        try:
            number = float(count)
        except ValueError:
            number = -1.0
    else:
        number, unit = -1.0, "?"
    if number < 0 or unit not in UNITS:
        raise ValueError(f"rate limit {value!r}: expected '<n>/s', '<n>/m', '<n>/h' or a number")
    return number / UNITS[unit]


def check_rate_limits(app: Celery) -> None:
    """Start-up check: every task's ``rate_limit`` (and ``task_default_rate_limit``) parses,
    else :class:`ImproperlyConfigured` naming the task or the setting."""
    try:
        parse_rate(app.conf.get("task_default_rate_limit"))
    except ValueError as exc:
        raise ImproperlyConfigured(f"setting task_default_rate_limit: {exc}") from None
    for name, task in sorted(app.tasks.items()):
        try:
            parse_rate(getattr(task, "rate_limit", None))
        except ValueError as exc:
            raise ImproperlyConfigured(f"task {name}: {exc}") from None


class RateLimiter:
    """Asks the broker for a token for each rate-limited delivery; gives refused ones back."""

    def __init__(self, broker: Broker, *, disabled: bool = False) -> None:
        self.broker = broker
        self.disabled = disabled
        #: task name -> the earliest time the next refused message of it is given back for
        self._next_slot: dict[str, float] = {}

    def admit(self, delivery: Delivery, task: Task) -> bool:
        """True if the task may run now; else its message is back in the broker, delayed."""
        if self.disabled:
            return True
        rate = parse_rate(task.rate_limit)
        if rate <= 0:
            return True
        name = str(task.name)
        try:
            wait = self.broker.take_token(f"task:{name}", rate, 1.0)
        except Exception as exc:  # the broker will be asked again when the message is back
            logger.warning("Rate limit of %s: could not reach the broker's bucket (%s); "
                           "the message waits %.0f s", name, exc, UNAVAILABLE_DELAY)
            self.broker.release(delivery, not_before=time.time() + UNAVAILABLE_DELAY)
            return False
        if wait <= 0:
            return True
        now = time.time()
        slot = max(now + wait, self._next_slot.get(name, 0.0))
        self._next_slot[name] = slot + 1.0 / rate
        logger.debug("Rate limit of %s (%s): message %s waits %.3f s in the broker", name,
                     task.rate_limit, delivery.message.task_id, slot - now)
        self.broker.release(delivery, not_before=slot)
        return False
