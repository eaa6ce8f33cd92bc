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
"""

from __future__ import annotations

import contextvars
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from .exceptions import OperationalError

_T = TypeVar("_T")

#: the monotonic time by which the running :func:`call` must end (None: no deadline)
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "celeriac_retry_deadline", default=None)
#: True while a :func:`call` runs: a call inside it makes one attempt (one retry layer)
_active: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "celeriac_retry_active", default=False)


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


def time_left() -> float | None:
    """Seconds until the deadline of the running :func:`call` (None when it has none)."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def call(operation: Callable[[], _T], policy: RetryPolicy, *,
         retry_on: tuple[type[BaseException], ...], what: str, where: str,
         on_retry: Callable[[BaseException, float], None] | None = None,
         sleep: Callable[[float], None] = time.sleep) -> _T:
    """Run ``operation``; on a ``retry_on`` error pause and retry by ``policy``.

    Raises :class:`OperationalError` ("<where>: <what> failed ...") when the
    retries are used up or the next attempt would start past the deadline;
    other errors propagate at once. Retrying happens in one layer only: a call
    made while another runs (a broker's own retrying call inside a publish the
    producer retries) makes a single attempt within the outer deadline, and
    the outer call's policy decides whether to try again.
    """
    if policy.timeout is None and _active.get():  # inside another call: one attempt, its deadline
        try:
            return operation()
        except retry_on as exc:
            raise OperationalError(_failure(where, what, 1, exc, time_left())) from exc
    deadline = None if policy.timeout is None else time.monotonic() + policy.timeout
    outer = _deadline.get()
    if outer is not None and (deadline is None or outer < deadline):
        deadline = outer
    if _active.get():
        policy = policy.once()
    token = _deadline.set(deadline)
    active = _active.set(True)
    try:
        pauses: Iterator[float] | None = None  # made at the first failure
        attempts = 0
        while True:
            attempts += 1
            try:
                return operation()
            except retry_on as exc:
                if pauses is None:
                    pauses = policy.intervals()
                pause = next(pauses, None)
                left = None if deadline is None else deadline - time.monotonic()
                if pause is None or (left is not None and left <= pause):
                    raise OperationalError(_failure(where, what, attempts, exc, left)) from exc
                if on_retry is not None:
                    on_retry(exc, pause)
                sleep(pause)
    finally:
        _active.reset(active)
        _deadline.reset(token)


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
