"""Broker and result-store outages as a worker lives them: weather, not death.

:class:`Weather` is the worker's :class:`~celeriac.retry.OutageWatch`. Every
broker or result-store call that gives up, and every receive loop that keeps
failing, tells it; the next call that succeeds at that server tells it too. It
logs ONE line when a server is lost and one when it is back (with how long it
was gone), never a line per retry. A prefork child does not log: it writes the
failing server into its slot in shared memory (``report``), and the supervisor,
whose own :class:`Weather` also reads every child's slot (:meth:`Weather.observe`),
logs one pair of lines for the whole node.

What the worker does meanwhile (see docs/workers.md, "Broker outages"):

* the consumer stops leasing (its receive finds nothing), tasks already running
  go on;
* what a finished task must write -- its result, its acknowledgement, a release or
  a dead letter -- waits in the process that ran it: those calls run in a
  :func:`celeriac.retry.patient` scope, so instead of raising they pause (up to a
  second at a time, through :meth:`Weather.pause`) and try again until the server
  answers, then settle as usual, fenced by the lease token: a task whose lease
  lapsed meanwhile is not acknowledged and is logged as "lease lost" (another
  worker may run it again: at-least-once);
* the supervisor never waits: each of its calls makes at most two attempts within
  :data:`QUICK_CALL` seconds (:func:`celeriac.retry.quick`), and what it must tell
  the broker (``expire_owner`` for a dead child, a time-limited or terminated task's
  acknowledgement and result) goes to its :class:`Outbox`, sent in order once the
  server answers again;
* a cold shutdown gives up waiting (:meth:`Weather.give_up`): unsettled leases
  lapse and their messages are delivered again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .. import retry
from ..exceptions import OperationalError

logger = logging.getLogger("celeriac.worker")

#: seconds between two attempts of the supervisor's outbox while the server is failing
OUTBOX_RETRY = 1.0
#: seconds a call of a loop that must keep turning (the supervisor, heartbeats, lease
#: renewal) may take, retries included (:func:`celeriac.retry.quick`)
QUICK_CALL = 2.0
#: seconds a server must keep working before "is back" is logged (a server that fails
#: again meanwhile -- stale connections after a restart -- continues the same outage)
BACK_CONFIRM = 1.0
#: what the worker's two lines say it does
WORKER_LOST = ("not taking new tasks; running tasks go on and their results and "
               "acknowledgements are kept until it is back")
WORKER_BACK = "settling what was kept, taking new tasks again"


class Weather:
    """One process's view of its servers: which are failing since when, one line each way.

    ``report`` (prefork children) is called with the first failing server and why,
    ``"<where>\t<what>: <error>"`` (or None once all work again), instead of
    logging. ``quiet`` logs at DEBUG (the renewer process: its owner reports).
    """

    def __init__(self, *, report: Callable[[str | None], None] | None = None,
                 quiet: bool = False, log: logging.Logger = logger,
                 lost: str = WORKER_LOST, back: str = WORKER_BACK) -> None:
        self.report = report
        self.level = logging.DEBUG if quiet else logging.WARNING
        self.log, self.lost_note, self.back_note = log, lost, back
        #: where -> why it failed first (what gave up, and its error)
        self._why: dict[str, str] = {}
        #: where -> (monotonic time since, the sources reporting it failing)
        self.down: dict[str, tuple[float, set[Any]]] = {}
        #: outages seen so far (each server lost and back counts one)
        self.outages = 0
        #: seconds a server must keep working before its return is logged
        self.confirm = 0.0 if report is not None else BACK_CONFIRM
        #: where -> (monotonic time lost, time back): working again, not yet logged
        self._recovering: dict[str, tuple[float, float]] = {}
        self._give_up = threading.Event()
        self._lock = threading.Lock()

    # -- the OutageWatch protocol -------------------------------------------------------
    def failing(self, where: str, what: str, exc: BaseException) -> None:
        self._change(where, "self", True, f"{what}: {exc}")

    def working(self, where: str) -> None:
        self._change(where, "self", False)

    def pause(self, seconds: float) -> bool:
        """Wait before a patient call tries again; False once the worker gives up."""
        return not self._give_up.wait(seconds)

    def down_since(self) -> dict[str, float]:
        """The servers this watch knows to be failing (its own calls or a child's report),
        with the monotonic time since: :func:`celeriac.retry.failing` includes them, so
        a supervisor's heartbeat and remote-control threads stay quiet in an outage its
        children reported."""
        with self._lock:
            return {where: since for where, (since, _) in self.down.items()}

    # -- the worker's side ----------------------------------------------------------------
    def give_up(self) -> None:
        """Cold shutdown: calls waiting for a server raise now (their leases lapse)."""
        self._give_up.set()

    def observe(self, source: Any, where: str | None, why: str = "") -> None:
        """What another process (a prefork child ``source``) reports: the server it finds
        failing (and why), or None when its calls work."""
        with self._lock:
            current = [w for w, (_, sources) in self.down.items() if source in sources]
        for old in current:
            if old != where:
                self._change(old, source, False)
        if where:
            self._change(where, source, True, why or "reported by a child process")

    def observe_all(self, reports: dict[Any, bytes]) -> None:
        """Each source's report (a prefork child's slot: the failing server, or b""), then
        :meth:`tick` (the supervisor calls this every tick)."""
        for source, report in reports.items():
            where, _, why = report.decode(errors="replace").partition("\t")
            self.observe(source, where or None, why)
        self.tick()

    def is_down(self) -> bool:
        return bool(self.down)

    def tick(self) -> None:
        """Log the return of servers that kept working for :attr:`confirm` seconds (the
        owner's loop calls this; a failure within that time continues the outage)."""
        if not self._recovering:
            return
        now = time.monotonic()
        with self._lock:
            due = [(w, since, back) for w, (since, back) in self._recovering.items()
                   if now - back >= self.confirm]
            for where, _, _ in due:
                del self._recovering[where]
                self.outages += 1
        for where, since, back in due:
            self.log.log(self.level, "Connection to %s is back after %.1fs: %s", where,
                         back - since, self.back_note)

    def _change(self, where: str, source: Any, failing: bool, why: str = "") -> None:
        with self._lock:
            resumed = self._recovering.pop(where, None) if failing else None
            since, sources = self.down.get(where, (time.monotonic(), set()))
            if resumed is not None:  # failing again right after it came back: the same
                since = resumed[0]   # outage goes on (no second pair of lines)
            was_down = bool(sources) or resumed is not None
            if failing:
                if source in sources:
                    return
                sources.add(source)
                self._why.setdefault(where, why)
                self.down[where] = (since, sources)
            else:
                if source not in sources:
                    return
                sources.discard(source)
                if sources:
                    return
                del self.down[where]
                self._why.pop(where, None)
                if self.report is None:
                    self._recovering[where] = (since, time.monotonic())
            first = next(iter(self.down), None)
            first_why = self._why.get(first, "") if first else ""
        if self.report is not None:
            self.report(f"{first}\t{first_why}" if first else None)
            return
        if failing and not was_down:
            self.log.log(self.level, "Lost the connection to %s (%s): %s", where, why,
                         self.lost_note)
        self.tick()


class Outbox:
    """Broker steps the supervisor could not take during an outage, sent in order later.

    :meth:`run` takes a step now when nothing waits before it; a step that fails
    with :class:`~celeriac.exceptions.OperationalError` (the server is failing) is
    kept, with every step after it, and :meth:`flush` (each supervisor tick) tries
    again every :data:`OUTBOX_RETRY` seconds. Any other error is logged and the
    step dropped, as before the outbox existed.
    """

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], Any]]] = []
        self._next_try = 0.0

    def __len__(self) -> int:
        return len(self._steps)

    def run(self, label: str, step: Callable[[], Any]) -> None:
        self._steps.append((label, step))
        if len(self._steps) == 1:
            self.flush(force=True)

    def close(self) -> None:
        """At shutdown: take the kept steps if the server answers by now."""
        self.flush(force=True)
        if self._steps:
            logger.error("Shutting down during an outage: %d broker step(s) not taken (%s); "
                         "the leases concerned lapse and their messages are delivered again",
                         len(self._steps), ", ".join(label for label, _ in self._steps))

    def flush(self, force: bool = False) -> None:
        if not self._steps or (not force and time.monotonic() < self._next_try):
            return
        while self._steps:
            label, step = self._steps[0]
            try:
                with retry.quick(QUICK_CALL):
                    step()
            except OperationalError:
                self._next_try = time.monotonic() + OUTBOX_RETRY
                return
            except Exception:
                logger.exception("Could not %s", label)
            self._steps.pop(0)


def patient_run(fn: Callable[[], Any]) -> None:
    """Run ``fn`` (a consumer's loop, as a thread's target) waiting out outages."""
    with retry.patient():
        fn()


def _patient_call(fn: Callable[..., Any], *args: Any) -> Any:
    with retry.patient():
        return fn(*args)


def patiently(offload: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """``offload(fn, *args)`` (the asyncio pool's executor) whose calls wait out an
    outage on the executor's thread, as a sync pool's job does."""
    async def patient_offload(fn: Callable[..., Any], *args: Any) -> Any:
        return await offload(_patient_call, fn, *args)
    return patient_offload


def outage_or_exception(exc: BaseException, message: str, *args: Any) -> None:
    """Log a failed broker call of a loop that retries it by itself: with its traceback,
    unless it is an outage (:class:`~celeriac.exceptions.OperationalError`), which the
    process's watch reports once."""
    if isinstance(exc, OperationalError):
        logger.debug(message + ": %s", *args, exc)
    else:
        logger.error(message, *args, exc_info=exc)
