"""The process's notion of time: one clock for delays, expiry, beat and time limits.

Everything in celeriac that schedules by the calendar reads the time here:
``countdown``/``eta`` (the ``not_before`` a publish computes and the in-process
brokers' delayed stores compare against), ``expires``, retry backoff (a
re-publish with a countdown), beat's fire times, ``app.now()`` and the soft and
hard time limits of in-process pools. Normally it is :class:`SystemClock`.

A test installs a :class:`ControlledClock` (``celeriac.contrib.testing.clock``
does, as the ``celery_clock`` fixture): time then stands still until the test
moves it, and everything above follows, without patching :mod:`time`. What does
not follow it, by design: lease expiry (liveness is measured in real time),
result expiry, and brokers that keep time on their server (Redis, PostgreSQL).

:class:`ManualClock` is the older beat-only helper whose ``sleep`` advances it
(a scheduler driven by hand in a test); :class:`ProcessClock` is a clock object
that reads whichever clock is installed at each call (beat's default).
"""

from __future__ import annotations

import threading
import time as _time
import weakref
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Protocol, runtime_checkable

UTC = timezone.utc


@runtime_checkable
class Clock(Protocol):
    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Wall clock (UTC) and real sleeping."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            _time.sleep(seconds)


class ManualClock:
    """A clock that only moves when told to; ``sleep`` advances it instantly.

    Thread-safe, so several schedulers may share one in a test.
    """

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware start time")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(max(seconds, 0.0))

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now

    def set(self, instant: datetime) -> None:
        with self._lock:
            self._now = instant.astimezone(UTC)


class ControlledClock:
    """Frozen time that moves only when :meth:`advance` or :meth:`set` is called.

    Unlike :class:`ManualClock`, ``sleep`` does not move time: a thread that
    sleeps (an embedded beat, a retry loop) waits until the clock has been
    moved past its wake-up time, or until that many real seconds passed,
    whichever comes first, so a stop request is still noticed. Every move wakes
    the waiters registered with :func:`on_change`. Time never goes backwards.
    """

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime.now(UTC).replace(microsecond=0)
        if start.tzinfo is None:
            raise ValueError("ControlledClock needs an aware start time (tzinfo set)")
        self._now = start.astimezone(UTC)
        self._cond = threading.Condition()

    def now(self) -> datetime:
        with self._cond:
            return self._now

    def time(self) -> float:
        return self.now().timestamp()

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with self._cond:
            until = self._now + timedelta(seconds=seconds)
            self._cond.wait_for(lambda: self._now >= until, timeout=seconds)

    def advance(self, seconds: float = 0.0, **delta: float) -> datetime:
        """Move forward by ``seconds`` plus ``timedelta`` keywords (``hours=1``, ``days=2``)."""
        step = timedelta(seconds=seconds, **delta)
        if step < timedelta(0):
            raise ValueError(f"a clock only moves forward (asked to move by {step})")
        with self._cond:
            self._now += step
            moved = self._now
            self._cond.notify_all()
        notify_change()
        return moved

    def set(self, instant: datetime) -> datetime:
        """Move to ``instant`` (aware; not before the current time)."""
        if instant.tzinfo is None:
            raise ValueError("ControlledClock.set needs an aware datetime (tzinfo set)")
        with self._cond:
            if instant < self._now:
                raise ValueError(f"a clock only moves forward ({instant.isoformat()} is before "
                                 f"{self._now.isoformat()})")
        return self.advance((instant - self.now()).total_seconds())


_SYSTEM = SystemClock()
_installed: Clock = _SYSTEM
_listeners: list[weakref.ref[Callable[[], None]]] = []
_listeners_lock = threading.Lock()


def current() -> Clock:
    """The installed clock (the system clock unless a test installed another)."""
    return _installed


def install(clock: Clock | None) -> Clock:
    """Make ``clock`` (None: the system clock) the process's clock; return the previous one."""
    global _installed
    previous, _installed = _installed, clock if clock is not None else _SYSTEM
    notify_change()
    return previous


def is_controlled() -> bool:
    """True while a clock other than the system clock is installed."""
    return _installed is not _SYSTEM


def now() -> datetime:
    """The current time as an aware UTC datetime."""
    return _installed.now()


def time() -> float:
    """The current time in epoch seconds (``time.time()`` under the system clock)."""
    if _installed is _SYSTEM:
        return _time.time()
    return _installed.now().timestamp()


def sleep(seconds: float) -> None:
    _installed.sleep(seconds)


def on_change(callback: Callable[[], None]) -> None:
    """Call ``callback`` (held weakly: a bound method or function) whenever the clock moves
    or another clock is installed, so waiters whose deadline came wake up."""
    ref: weakref.ref[Callable[[], None]] = (
        weakref.WeakMethod(callback) if hasattr(callback, "__self__")
        else weakref.ref(callback))
    with _listeners_lock:
        _listeners.append(ref)


def notify_change() -> None:
    with _listeners_lock:
        alive = [ref for ref in _listeners if ref() is not None]
        _listeners[:] = alive
    for ref in alive:
        callback = ref()
        if callback is not None:
            callback()


class ProcessClock:
    """A :class:`Clock` that reads the installed clock at every call."""

    def now(self) -> datetime:
        return now()

    def sleep(self, seconds: float) -> None:
        sleep(seconds)
