"""Opt-in synchronous replication of publishes: Redis's ``WAIT`` after the writes.

Redis replicates asynchronously: a message a master accepted and lost in a crash
before its replicas copied it is gone, even though ``delay()`` returned. With the
transport option ``wait_for_replicas: N`` (and ``wait_for_replicas_timeout``,
seconds, default 1.0) a publish sends ``WAIT N <timeout>`` on the same connection
after its writes and returns only once ``N`` replicas acknowledged them; when
fewer did within the timeout, it raises :class:`~celeriac.exceptions.OperationalError`
(the message is on the master and may be delivered; a retried publish can
deliver it twice, as at-least-once allows). See docs/redis.md, *Failover*.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ...exceptions import ImproperlyConfigured, OperationalError


def replicas_wanted(options: Mapping[str, Any]) -> tuple[int, float]:
    """``(N, timeout seconds)`` of the options (N = 0: no waiting)."""
    raw = options.get("wait_for_replicas") or 0
    try:
        wanted = int(raw)
        timeout = float(options.get("wait_for_replicas_timeout", 1.0))
    except (TypeError, ValueError):
        raise ImproperlyConfigured(
            "wait_for_replicas must be a whole number of replicas and "
            "wait_for_replicas_timeout a number of seconds") from None
    if wanted < 0 or timeout <= 0:
        raise ImproperlyConfigured(
            "wait_for_replicas must be >= 0 and wait_for_replicas_timeout > 0 "
            f"(got {raw!r}, {options.get('wait_for_replicas_timeout')!r})")
    return wanted, timeout


def wait_command(options: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """``("WAIT", N, ms)`` to send after a publish's writes, or None."""
    wanted, timeout = replicas_wanted(options)
    if not wanted:
        return None
    return ("WAIT", wanted, max(1, int(timeout * 1000)))


def checked_wait(options: Mapping[str, Any], replies: Sequence[Any]) -> None:
    """Raise when a ``WAIT`` reply counts fewer replicas than wanted."""
    wanted, timeout = replicas_wanted(options)
    for reply in replies:
        if int(reply) < wanted:
            raise OperationalError(
                f"publish: only {int(reply)} of {wanted} replicas acknowledged within "
                f"{timeout:g} s (wait_for_replicas); the message is on the master and "
                "may still be delivered")
