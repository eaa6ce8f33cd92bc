"""What a replicated Redis adds (Sentinel, Cluster): failover retries, and waits for replicas.

Failover: on ``sentinel://`` and ``redis+cluster://`` URLs the broker's and result
store's own ``retry_policy`` defaults to :data:`FAILOVER_RETRY` (about 15 s of
retries, long enough for a replica to take over); an explicit ``retry_policy``
wins. Producers retry by ``task_publish_retry_policy`` (see docs/redis.md).

Opt-in synchronous replication of publishes, Redis's ``WAIT`` after the writes:

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
from typing import TYPE_CHECKING, Any

from ...exceptions import ImproperlyConfigured, OperationalError
from ...retry import RetryPolicy

if TYPE_CHECKING:
    from .client import Connection

#: retries of a broker or result store on a replicated Redis: ~15 s, a failover's length
FAILOVER_RETRY = {"max_retries": 20, "interval_start": 0.1, "interval_step": 0.2,
                  "interval_max": 1.0}
_REPLICATED = ("sentinel", "redis+cluster", "rediss+cluster")


def retry_policy_for(url: str, options: Mapping[str, Any]) -> RetryPolicy:
    """The ``retry_policy`` option, or on Sentinel and Cluster URLs :data:`FAILOVER_RETRY`."""
    given = options.get("retry_policy")
    if given is None and url.split("://", 1)[0].lower() in _REPLICATED:
        given = FAILOVER_RETRY
    return RetryPolicy.from_celery(given)


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


class ReplicaWaits:
    """Mixed into the Redis broker, whose ``publish`` and ``publish_many`` end with
    :meth:`await_replicas`: ``WAIT`` for the replicas wanted, on the same per-thread
    connection that carried the publish's writes."""

    options: dict[str, Any]

    if TYPE_CHECKING:
        def _connection(self) -> Connection: ...

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)  # type: ignore[call-arg]
        replicas_wanted(self.options)  # a bad value is refused when the broker is made

    def await_replicas(self) -> None:
        """``WAIT`` on this thread's connection, when ``wait_for_replicas`` is set."""
        wait = wait_command(self.options)
        if wait is not None:
            checked_wait(self.options, [self._connection()[3].execute(*wait)])
