"""Token buckets for task ``rate_limit``: what :meth:`Broker.take_token` must do.

``take_token(key, rate, capacity) -> wait`` takes one token from the bucket ``key``
and returns 0.0, or returns the seconds until a token will be there (taking
nothing). An engine's broker may import :func:`bucket_take` for the arithmetic.

What every broker must implement (the contract suite checks each point):

* **One bucket per key, shared** by every client of the broker: every
  process and host that uses the same broker URL (and key prefix/schema/
  vhost) sees the same bucket. ``key`` is any text (the worker passes
  ``"task:<task name>"``); keep it in the broker's private namespace.
* **Atomic**: the read, refill and take of one call are one step (a Lua
  script, one SQL statement or transaction holding the row, a lock), so
  ``n`` concurrent callers on a full bucket of ``capacity`` get exactly
  ``min(n, capacity)`` zeros.
* **Refill**: a new bucket starts full (``capacity`` tokens); it gains
  ``rate`` tokens per second (``rate > 0``) up to ``capacity``, computed
  lazily from the time of its last update (``capacity >= 1``;
  :func:`bucket_take` is the arithmetic). The clock is the server's where
  there is one (Redis ``TIME``, PostgreSQL ``clock_timestamp()``), so
  skewed hosts agree.
* **The wait** when no whole token is left is ``(1 - tokens) / rate``
  seconds; a refused call changes nothing but the refill.
* ``rate``/``capacity`` are the caller's current ones (a changed
  ``rate_limit`` applies from the next call); state is only
  ``(tokens, updated)`` per key.
* A bucket unused for ``capacity / rate`` seconds is full again, so it may
  be forgotten (expired, deleted) after that; nothing else may be lost.
* Failures raise :class:`~celeriac.exceptions.OperationalError` like the
  other calls; ``rate <= 0`` or ``capacity < 1`` raise ``ValueError``.

``tests/contract/test_rate_limit_contract.py`` checks all of it. The worker
calls this once per rate-limited message it leases and gives a refused one
back with ``release(not_before=now + wait)``; it never keeps it in memory.
"""

from __future__ import annotations

__all__ = ["bucket_take"]


def bucket_take(tokens: float, updated: float, now: float, rate: float,
                capacity: float) -> tuple[float, float]:
    """The token-bucket step of :meth:`Broker.take_token`: ``(tokens left, wait)`` for a
    bucket that held ``tokens`` at ``updated``; ``wait`` is 0.0 when a token was taken."""
    if rate <= 0 or capacity < 1:
        raise ValueError(f"a token bucket needs rate > 0 and capacity >= 1, got rate={rate!r}, "
                         f"capacity={capacity!r}")
    level = min(float(capacity), tokens + max(0.0, now - updated) * rate)
    if level >= 1.0:
        return level - 1.0, 0.0
    return level, (1.0 - level) / rate
