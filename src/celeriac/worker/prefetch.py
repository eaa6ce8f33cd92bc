"""How many messages a consumer leases beyond its free slots: the prefetch rule.

A consumer always asks for what its free slots can start now. What it may hold
*beyond* them is decided here, in one of two ways:

* **fixed** (``worker_prefetch_multiplier`` set explicitly, in the configuration
  or with ``--prefetch-multiplier``): ``(multiplier - 1) x concurrency`` extra
  messages, whatever the tasks cost, as before; ``worker_disable_prefetch = True``
  (Celery 5.5's setting) means none, whatever the multiplier;
* **adaptive** (the default): at most ``worker_prefetch_budget`` seconds of
  *expected work* beyond the free slots. The expected run time of a task is an
  average of the recent run times of this consumer's tasks (start to settled,
  wall clock) that rises at once to a longer run and decays slowly (by a fifth
  per task) towards shorter ones, and never counts a running task as shorter
  than it has run so far. ``extra = budget // expected`` (at most
  :data:`MAX_EXTRA_PER_SLOT` per slot): a drain of no-ops leases dozens at a
  time, tasks of a tenth of the budget lease ten extra, and as soon as tasks take
  longer than the budget the consumer holds nothing beyond its free slots.
  Before the first task has finished nothing extra is leased.

An estimate can be wrong (a long task after many short ones): the adaptive rule
then also *gives back* what waits. When no waiting message could start for
longer than the budget because every slot stayed busy, the consumer releases the
messages it holds but has not started (not counted as failed deliveries), so
another slot or worker runs them (:meth:`PrefetchRule.stalled`).

:class:`PrefetchRule` also counts what the consumer asked for (lease requests,
those that asked beyond the free slots, the largest), shown by ``inspect stats``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

#: adaptive prefetch never leases more than this many extra messages per slot
MAX_EXTRA_PER_SLOT = 64
#: how fast the expected run time follows shorter runs (a longer one is taken at once)
DECAY = 0.2


def explicit_multiplier(conf: Any, option: int | None) -> int | None:
    """The prefetch multiplier the user chose (``--prefetch-multiplier``, else the setting
    when it was set explicitly), or None: the adaptive rule applies."""
    if option is not None:
        return int(option)
    changes = getattr(conf, "changes", {})
    if "worker_prefetch_multiplier" in changes:
        return int(conf.worker_prefetch_multiplier)
    return None


class PrefetchRule:
    """The extra messages one consumer may hold, and what it asked for so far."""

    def __init__(self, concurrency: int = 1, *, fixed: int | None = None,
                 budget: float = 0.0) -> None:
        self.concurrency = max(1, int(concurrency))
        #: extra messages under the fixed rule; None: adaptive
        self.fixed = None if fixed is None else max(0, int(fixed))
        self.budget = max(0.0, float(budget))
        self.limit = MAX_EXTRA_PER_SLOT * self.concurrency
        #: expected seconds per task (None: nothing finished yet)
        self.expected: float | None = None
        self.requests = 0
        self.batched = 0
        self.largest = 0
        self.received = 0
        self.given_back = 0
        self._lock = threading.Lock()

    @classmethod
    def for_worker(cls, conf: Any, concurrency: int, option: int | None) -> PrefetchRule:
        """The rule of a worker with ``concurrency`` slots (``option``: the CLI's
        ``--prefetch-multiplier``)."""
        if conf.get("worker_disable_prefetch"):
            return cls(concurrency, fixed=0)
        multiplier = explicit_multiplier(conf, option)
        if multiplier is not None:
            return cls(concurrency, fixed=max(0, multiplier - 1) * concurrency)
        return cls(concurrency, budget=float(conf.worker_prefetch_budget or 0))

    def per_child(self) -> PrefetchRule:
        """The same rule for one single-slot consumer (a prefork child)."""
        if self.fixed is not None:
            return PrefetchRule(1, fixed=self.fixed // self.concurrency)
        return PrefetchRule(1, budget=self.budget)

    def child_options(self) -> dict[str, Any]:
        """How a prefork child's :class:`~.child.ChildSpec` carries this rule (picklable)."""
        if self.fixed is not None:
            return {"prefetch": self.fixed // self.concurrency, "prefetch_budget": None}
        return {"prefetch": 0, "prefetch_budget": self.budget}

    @property
    def adaptive(self) -> bool:
        return self.fixed is None

    @property
    def may_batch(self) -> bool:
        """True if a lease can bring more than the free slots (results worth batching)."""
        return bool(self.fixed) if self.fixed is not None else self.budget > 0

    def observe(self, seconds: float) -> None:
        """A task of this consumer ran ``seconds`` (start to settled)."""
        seconds = max(0.0, seconds)
        with self._lock:
            old = self.expected
            self.expected = (seconds if old is None or seconds >= old
                             else old + DECAY * (seconds - old))

    def extra(self, running_for: float = 0.0) -> int:
        """Messages to lease beyond the free slots now; ``running_for``: how long the
        longest task running on this consumer has run so far."""
        if self.fixed is not None:
            return self.fixed
        expected = self.expected
        if expected is None or self.budget <= 0:
            return 0
        expected = max(expected, running_for, 1e-6)
        if expected >= self.budget:
            return 0
        return min(self.limit, int(self.budget / expected))

    def stalled(self, waiting_since: float, now: float | None = None) -> bool:
        """True if messages that have waited since ``waiting_since`` (monotonic: the
        last time a job could start) must be given back: adaptive rule only."""
        if self.fixed is not None:
            return False
        now = time.monotonic() if now is None else now
        return now - waiting_since > self.budget

    def asked(self, limit: int, free: int, received: int) -> None:
        """Count one lease request for ``limit`` messages with ``free`` slots free."""
        self.requests += 1
        self.received += received
        if limit > free:
            self.batched += 1
        if limit > self.largest:
            self.largest = limit

    def stats(self) -> dict[str, Any]:
        """What ``inspect stats`` shows under ``prefetch``."""
        rule: dict[str, Any] = ({"rule": "fixed", "extra": self.fixed} if self.fixed is not None
                                else {"rule": "adaptive", "budget": self.budget,
                                      "expected_seconds": self.expected})
        return {**rule, **self.counters()}

    def counters(self) -> dict[str, int]:
        return {"lease_requests": self.requests, "batched_requests": self.batched,
                "largest_request": self.largest, "received": self.received,
                "given_back": self.given_back}
