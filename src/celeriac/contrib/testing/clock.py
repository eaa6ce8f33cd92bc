"""``TestClock``: freeze celeriac's time in a test and move it, running what became due.

Entering a :class:`TestClock` installs a :class:`~celeriac.clock.ControlledClock`
as the process clock (:mod:`celeriac.clock`): nothing patches :mod:`time`, yet
every ``countdown``/``eta``, ``expires``, retry backoff, beat schedule and time
limit of the app now reads that clock. :meth:`TestClock.advance` moves it like
Temporal's time skipping: it jumps to the next moment something is due (a
delayed message, a beat fire), runs everything due then to completion with a real
in-process worker (:mod:`.drain`), and repeats until the target time. So a
crontab due tomorrow at 07:30 fires, at 07:30, after ``advance(days=1)``, and a
retry with exponential backoff runs each retry at its own time, in order,
without sleeping.

Needs the memory broker (the test app's default): leases there follow real
time, so moving the clock never takes a running task from its worker. Other
brokers keep time on their server (Redis, PostgreSQL) or store leases in the
same column as delays (SQLite), and are refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from types import TracebackType

from ... import clock
from ...app.base import Celery
from ...beat.scheduler import Scheduler
from ...exceptions import ImproperlyConfigured
from .drain import (
    MAX_STEPS,
    DrainResult,
    known_queues,
    next_delayed,
    record_outcomes,
    wait_idle,
)
from .worker import start_worker

#: Beat's loop caps, lifted: the test clock asks beat for its next fire directly.
_FOREVER = 10 * 365 * 86400.0


class TestClock:
    """The process clock, frozen at ``start`` (default: now, whole seconds) until moved."""

    __test__ = False

    def __init__(self, app: Celery, start: datetime | None = None, *, beat: bool = True,
                 queues: Iterable[str] | None = None, timeout: float = 30.0) -> None:
        self.app = app
        self.start = start
        self.beat = beat
        self.queues = list(queues) if queues is not None else None
        self.timeout = timeout
        self.clock: clock.ControlledClock | None = None
        self._previous: clock.Clock | None = None
        self._scheduler: Scheduler | None = None
        self._wait: float | None = None  # seconds from the last beat tick to the next fire

    # -- install / uninstall ----------------------------------------------------------
    def __enter__(self) -> TestClock:
        scheme = self.app.broker_url.split(":", 1)[0]
        if scheme != "memory":
            raise ImproperlyConfigured(
                f"TestClock needs the memory broker (broker_url 'memory://'), not {scheme!r}: "
                "other brokers keep time on their server or lease by the same clock")
        self.clock = clock.ControlledClock(self.start)
        self._previous = clock.install(self.clock)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._scheduler is not None:
            self._scheduler.close()
            self._scheduler = None
        clock.install(self._previous)
        self.clock = None

    def _clock(self) -> clock.ControlledClock:
        if self.clock is None:
            raise RuntimeError("TestClock is not installed: use it as a context manager "
                               "(or the celery_clock fixture)")
        return self.clock

    # -- reading ----------------------------------------------------------------------------
    def now(self) -> datetime:
        """The clock's time (aware, UTC)."""
        return self._clock().now()

    def time(self) -> float:
        return self._clock().time()

    # -- moving --------------------------------------------------------------------------
    def advance(self, seconds: float = 0.0, *, run: bool = True, **delta: float) -> DrainResult:
        """Move forward by ``seconds`` plus ``timedelta`` keywords (``hours=1``, ``days=1``),
        running what becomes due on the way (unless ``run`` is false); return what ran."""
        target = self.now() + timedelta(seconds=seconds, **delta)
        return self.advance_to(target, run=run)

    def advance_to(self, target: datetime, *, run: bool = True) -> DrainResult:
        """Move to ``target`` (aware), running what becomes due on the way."""
        moving = self._clock()
        if target.tzinfo is None:
            raise ValueError("advance_to needs an aware datetime (tzinfo set)")
        if not run:
            moving.set(max(target, moving.now()))
            return DrainResult()
        names = known_queues(self.app, self.queues)
        with record_outcomes(self.app) as result, \
                start_worker(self.app, queues=names, perform_ping_check=False, pool="solo"):
            for _step in range(MAX_STEPS):
                self.run_due(names)
                upcoming = [t for t in (next_delayed(self.app, names), self._next_fire())
                            if t is not None]
                due = min(upcoming) if upcoming else None
                if due is None or due > target.timestamp():
                    break
                if due > moving.time():
                    moving.set(datetime.fromtimestamp(due, clock.UTC))
            else:
                raise RuntimeError(f"TestClock: more than {MAX_STEPS} due moments before "
                                   f"{target.isoformat()}")
            moving.set(max(target, moving.now()))
            self.run_due(names)
        return result

    def run_due(self, queues: list[str] | None = None) -> None:
        """Fire what beat has due now, then wait until every due task ran (a worker must be
        running: :meth:`advance` starts one)."""
        names = queues or known_queues(self.app, self.queues)
        self._beat_tick()
        wait_idle(self.app, names, self.timeout)

    # -- beat ------------------------------------------------------------------------------
    def _beat_scheduler(self) -> Scheduler | None:
        if not self.beat:
            return None
        if self._scheduler is None:
            scheduler = Scheduler(self.app, clock=clock.ProcessClock(), max_interval=_FOREVER,
                                  lease_seconds=_FOREVER, claim_timeout=_FOREVER)
            scheduler.setup()
            self._scheduler = scheduler
        return self._scheduler

    def _beat_tick(self) -> None:
        scheduler = self._beat_scheduler()
        if scheduler is not None:
            self._wait = scheduler.tick()

    def _next_fire(self) -> float | None:
        """Epoch seconds of beat's next fire (None: no beat, or nothing scheduled)."""
        scheduler = self._beat_scheduler()
        if scheduler is None or not scheduler.entries:
            return None
        if self._wait is None or self._wait >= _FOREVER / 3 - 1:
            return None
        return self.time() + self._wait
