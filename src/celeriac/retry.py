"""The one retry helper: Celery's ``retry_policy`` plus a total deadline, and task backoff.

:class:`RetryPolicy` is pure data with Celery's keys (``max_retries``,
``interval_start``, ``interval_step``, ``interval_max``) and a ``timeout``:
the whole call, every attempt and pause included, gives up after it.
:func:`call` runs an operation under a policy and raises
:class:`~celeriac.exceptions.OperationalError` naming what failed where.
Every broker, result store and schedule store call that retries goes through
it, and publishing (``apply_async(retry=, retry_policy=)``,
``task_publish_retry*``, ``broker_publish_timeout``) is one :func:`call`.

While a call with a timeout runs, :func:`time_left` tells code underneath
(a driver about to block on a socket) how long it may still wait, so a server
that accepts connections but never answers cannot hold the caller past the
deadline. :func:`exponential_backoff` is the countdown arithmetic of
``Task.retry_backoff``.

Outages: a service (the worker, beat) installs one :class:`OutageWatch` per
process with :func:`watch_outages`; every call that gives up on a server, and
every consumer loop that keeps failing (:func:`report_failure`), tells it the
server is failing, and the next call that succeeds there tells it the server
works again (:func:`report_success`), so the service logs one line per outage
instead of one per retry. Inside a :func:`patient` scope (a worker settling
what its tasks did), a call without a deadline that used up its policy does
not raise: it waits for the server, pausing through the watch (at most a
second at a time, so it resumes within about a second of the server coming
back), until it succeeds or the watch gives up (a cold shutdown). Calls with a
deadline (publishing) still raise when it is reached.
"""

from __future__ import annotations

import contextvars
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

from .exceptions import OperationalError

_T = TypeVar("_T")

#: the monotonic time by which the running :func:`call` must end (None: no deadline)
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "celeriac_retry_deadline", default=None)
#: True while a :func:`call` runs: a call inside it makes one attempt (one retry layer)
_active: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "celeriac_retry_active", default=False)
#: seconds each call may take in a :func:`quick` scope (None: not in one)
_quick: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "celeriac_retry_quick", default=None)
#: True in a :func:`patient` scope: calls without a deadline wait out an outage
_patient: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "celeriac_retry_patient", default=False)


class OutageWatch(Protocol):
    """What a service is told about its servers (see :func:`watch_outages`)."""

    def failing(self, where: str, what: str, exc: BaseException) -> None:
        """Calls to ``where`` fail (``what`` gave up, or a consumer keeps failing)."""

    def working(self, where: str) -> None:
        """A call to ``where`` succeeded again after :meth:`failing`."""

    def pause(self, seconds: float) -> bool:
        """Wait ``seconds`` before the next attempt of a patient call; False: give up."""

    def down_since(self) -> dict[str, float]:
        """Servers the watch knows to be failing (where -> monotonic time since), its own
        reports and those of other processes (a prefork supervisor's children)."""


#: the process's watch (None: nothing is told, patient calls raise as others do)
_watch: OutageWatch | None = None
#: servers reported failing and not yet working again: where -> monotonic time since
_failing: dict[str, float] = {}
#: where -> monotonic time a call to it last worked again after failing: an attempt
#: that began before then says nothing about the server now
_recovered: dict[str, float] = {}
_report_lock = threading.Lock()
#: the longest pause between two attempts of a patient call
PATIENT_PAUSE_MAX = 1.0


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry (Celery's ``retry_policy`` keys plus ``timeout``)."""

    #: retries after the first attempt; None retries until ``timeout``
    max_retries: int | None = 3
    interval_start: float = 0.0
    interval_step: float = 0.2
    interval_max: float = 1.0
    #: seconds the whole call may take (None: no deadline)
    timeout: float | None = None

    @classmethod
    def from_celery(cls, policy: Mapping[str, Any] | None = None, *,
                    timeout: float | None = None) -> RetryPolicy:
        """A policy from a Celery ``retry_policy`` dict (missing keys keep their defaults)."""
        given = dict(policy or {})
        unknown = set(given) - {"max_retries", "interval_start", "interval_step", "interval_max"}
        if unknown:
            raise ValueError(f"retry_policy: unknown keys {sorted(unknown)}")
        base = cls(timeout=timeout)
        max_retries = given.get("max_retries", base.max_retries)
        return cls(max_retries=None if max_retries is None else int(max_retries),
                   interval_start=float(given.get("interval_start", base.interval_start)),
                   interval_step=float(given.get("interval_step", base.interval_step)),
                   interval_max=float(given.get("interval_max", base.interval_max)),
                   timeout=timeout)

    def once(self) -> RetryPolicy:
        """The same deadline, no retries (``apply_async(retry=False)``)."""
        return replace(self, max_retries=0)

    def intervals(self) -> Iterator[float]:
        """The pauses before retry 1, 2, ...: ``start + n * step``, at most ``interval_max``."""
        n = 0
        while self.max_retries is None or n < self.max_retries:
            yield max(0.0, min(self.interval_start + n * self.interval_step, self.interval_max))
            n += 1


def watch_outages(watch: OutageWatch | None) -> OutageWatch | None:
    """Install ``watch`` for this process (None: remove it); return the previous one.

    Servers reported failing before (by a parent process, before a fork) are
    forgotten: the new watch starts from a clean slate.
    """
    global _watch
    previous, _watch = _watch, watch
    with _report_lock:
        _failing.clear()
    return previous


def watching() -> OutageWatch | None:
    """The watch installed in this process (None: none)."""
    return _watch


class patient:
    """Within the block, calls without a deadline wait out an outage (``wait=False``:
    they raise as usual, e.g. for a task body inside a patient worker). A class, not a
    generator: the worker enters one around every task body."""

    __slots__ = ("_token", "wait")

    def __init__(self, wait: bool = True) -> None:
        self.wait = wait

    def __enter__(self) -> None:
        self._token = _patient.set(self.wait)

    def __exit__(self, *exc: object) -> None:
        _patient.reset(self._token)


@contextmanager
def quick(seconds: float) -> Iterator[None]:
    """Within the block each call makes at most two attempts (the second for a socket a
    restarted server closed) and ends within ``seconds``: for a loop that must keep
    turning during an outage (the prefork supervisor). Failures are reported as usual."""
    token = _quick.set(seconds)
    try:
        yield
    finally:
        _quick.reset(token)


def report_failure(where: str, what: str, exc: BaseException,
                   started: float | None = None) -> None:
    """Tell the watch calls to ``where`` fail (once per outage; cheap after that).
    ``started``: when the failed attempt began (monotonic); one that began before a later
    call found the server back (a wait for a pooled connection that spanned the return)
    is not a new outage."""
    with _report_lock:
        if where in _failing:
            return
        if started is not None and started < _recovered.get(where, float("-inf")):
            return
        _failing[where] = time.monotonic()
    watch = _watch
    if watch is not None:
        watch.failing(where, what, exc)


def report_success(where: str) -> None:
    """A call to ``where`` worked: tell the watch if it was failing (a dict lookup else)."""
    if not _failing or where not in _failing:
        return
    with _report_lock:
        if _failing.pop(where, None) is None:
            return
        _recovered[where] = time.monotonic()
    watch = _watch
    if watch is not None:
        watch.working(where)


class Streak:
    """Failures in a row of a loop that retries by itself (a consumer's receive): the
    third one reports an outage (the first may be a stale socket after a restart)."""

    def __init__(self, where: str, what: str, after: int = 3) -> None:
        self.where, self.what, self.after, self.count = where, what, after, 0

    def failed(self, exc: BaseException, started: float | None = None) -> None:
        """One more failure; ``started``: when that attempt began (see report_failure)."""
        self.count += 1
        if self.count >= self.after:  # (cheap once reported)
            report_failure(self.where, self.what, exc, started)

    def ok(self) -> None:
        """A call worked: the streak ends, and a server this process knew failing (from
        this loop or any other call to it) is reported back."""
        self.count = 0
        if _failing:
            report_success(self.where)


def failing() -> dict[str, float]:
    """Servers failing now (where -> monotonic time since), as reported in this process
    or known to its watch (a prefork supervisor's: what its children report)."""
    out = dict(_failing)
    watch = _watch
    if watch is not None:
        for where, since in watch.down_since().items():
            out.setdefault(where, since)
    return out


def time_left() -> float | None:
    """Seconds until the deadline of the running :func:`call` (None when it has none)."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def at_top() -> bool:
    """No :func:`call` runs here and no :func:`quick` scope is open: a call made now would
    be a top-level one with its own policy, so its first attempt may be made before
    entering :func:`call` (a hot path's) and handed over with ``failed`` if it fails."""
    return not _active.get() and _quick.get() is None


def attempt_error(where: str, what: str, exc: BaseException,
                  left: float | None = None) -> OperationalError:
    """The error one attempt made inside another call raises (see :func:`call`)."""
    return OperationalError(_failure(where, what, 1, exc, left))


def call(operation: Callable[[], _T], policy: RetryPolicy, *,
         retry_on: tuple[type[BaseException], ...], what: str, where: str,
         on_retry: Callable[[BaseException, float], None] | None = None,
         sleep: Callable[[float], None] = time.sleep,
         failed: BaseException | None = None, started: float | None = None) -> _T:
    """Run ``operation``; on a ``retry_on`` error pause and retry by ``policy``.

    Raises :class:`OperationalError` ("<where>: <what> failed ...") when the
    retries are used up or the next attempt would start past the deadline;
    other errors propagate at once. Retrying happens in one layer only: a call
    made while another runs (a broker's own retrying call inside a publish the
    producer retries) makes a single attempt within the outer deadline, and
    the outer call's policy decides whether to try again. In a :func:`patient`
    scope, a call without a deadline waits out an outage instead of raising (see
    the module docstring). ``failed``: the first attempt was made already (where
    :func:`at_top` was true, at monotonic time ``started``) and raised this ``retry_on``
    error; the call goes on as if it had made that attempt itself.
    """
    if policy.timeout is None and _active.get():  # inside another call: one attempt, its deadline
        try:
            return operation()
        except retry_on as exc:
            raise OperationalError(_failure(where, what, 1, exc, time_left())) from exc
    limit = _quick.get()
    if limit is not None:
        policy = replace(policy, max_retries=1 if policy.max_retries is None
                         else min(1, policy.max_retries),
                         timeout=limit if policy.timeout is None else min(limit, policy.timeout))
    begun = time.monotonic() if started is None else started
    deadline = None if policy.timeout is None else begun + policy.timeout
    outer = _deadline.get()
    if outer is not None and (deadline is None or outer < deadline):
        deadline = outer
    nested = _active.get()
    if nested:
        policy = policy.once()
    token = _deadline.set(deadline)
    active = _active.set(True)
    try:
        pauses: Iterator[float] | None = None  # made at the first failure
        attempts = 0
        while True:
            attempts += 1
            attempt_started = begun if attempts == 1 else time.monotonic()
            try:
                if failed is not None:
                    first, failed = failed, None
                    raise first
                result = operation()
            except retry_on as exc:
                if pauses is None:
                    pauses = policy.intervals()
                pause = next(pauses, None)
                left = None if deadline is None else deadline - time.monotonic()
                if pause is None or (left is not None and left <= pause):
                    if not nested:  # an inner call's failure is its outer call's to judge
                        if deadline is None and _patient.get():
                            return _wait_out(operation, retry_on, what, where, exc, attempts,
                                             attempt_started)
                        report_failure(where, what, exc, attempt_started)
                    raise OperationalError(_failure(where, what, attempts, exc, left)) from exc
                if on_retry is not None:
                    on_retry(exc, pause)
                sleep(pause)
            else:
                if _failing:
                    report_success(where)
                return result
    finally:
        _active.reset(active)
        _deadline.reset(token)


def _wait_out(operation: Callable[[], _T], retry_on: tuple[type[BaseException], ...],
              what: str, where: str, exc: BaseException, attempts: int,
              started: float | None = None) -> _T:
    """A patient call whose policy is used up: report the outage (unless its last attempt
    began before the server was found back), then try again after each pause of the
    watch until the server answers or the watch gives up."""
    report_failure(where, what, exc, started)
    pause = 0.1
    while True:
        watch = _watch
        if watch is None or not watch.pause(pause):
            raise OperationalError(_failure(where, what, attempts, exc, None)) from exc
        pause = min(pause * 2, PATIENT_PAUSE_MAX)
        attempts += 1
        started = time.monotonic()
        try:
            result = operation()
        except retry_on as again:
            exc = again
            report_failure(where, what, exc, started)  # (at once if already reported)
            continue
        report_success(where)
        return result


def _failure(where: str, what: str, attempts: int, exc: BaseException,
             left: float | None) -> str:
    tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    why = " (deadline reached)" if left is not None and left <= 0 else ""
    return f"{where}: {what} failed after {tries}{why}: {exc}"


def exponential_backoff(factor: float, retries: int, maximum: float,
                        full_jitter: bool = False, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``retries + 1``.

    ``factor * 2 ** retries`` capped at ``maximum``; with ``full_jitter`` a
    uniform draw in ``[0, that]`` (as ``celery.utils.time.get_exponential_backoff_interval``).
    """
    countdown = min(maximum, factor * (2 ** retries))
    if full_jitter:
        countdown = (rng or random).randrange(int(countdown) + 1) if countdown >= 1 else 0.0
    return max(0.0, float(countdown))
