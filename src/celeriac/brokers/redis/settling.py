"""A worker's loop turn on Redis in one round trip: results, acknowledgements, the lease.

When the worker's result store lives on the broker's Redis (the same client,
hence the same per-thread connection), :meth:`RedisSettling.settle_and_receive`
pipelines the ``SETTLE`` script (:mod:`.result_scripts`: the batch's results
written under the REVOKED rule, then its acknowledgements, in one atomic step,
so a failed write acknowledges nothing) and ``RECEIVE``. Every key ``SETTLE``
touches is passed in ``KEYS`` (task meta keys, per acknowledgement its lease, and
each lease set and owner set of the acknowledged leases once). Otherwise the broker interface's
default runs: ``set_many``, then ``ack_and_receive``. A connection error settles
nothing: it is raised as :class:`~celeriac.exceptions.OperationalError` (the
consumer keeps the batch for its next turn) and, from the third in a row, reported
as an outage (:class:`celeriac.retry.Streak`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import redis

from ...exceptions import OperationalError
from ...retry import Streak
from ..base import Broker, Delivery
from .client import RETRYABLE_ERRORS, evalsha, run_pipeline, where_of
from .results import RedisResultStore

if TYPE_CHECKING:
    from .client import Connection

_MOST = 1000  # results, and acknowledgements, carried in one script call


class RedisSettling:
    """Mixed into :class:`~celeriac.brokers.redis.broker.RedisBroker`."""

    prefix: str
    url: str
    _peek: str

    if TYPE_CHECKING:
        def _connection(self) -> Connection: ...

        def _key(self, name: str) -> str: ...

        def _receive_args(self, queues: list[str], owner: str, limit: int) -> list[Any]: ...

        def _deliveries(self, reply: list[Any], queues: list[str],
                        owner: str) -> tuple[list[Delivery], float | None]: ...

        def release(self, delivery: Delivery, *, not_before: float | None = None,
                    failed: bool = False) -> bool: ...

        def _found_nothing(self, queues: Sequence[str], owner: str,
                           hint: float | None) -> None: ...

    @property
    def _settle_streak(self) -> Streak:
        """Connection failures in a row of :meth:`settle_and_receive` (reports an outage:
        the consumer retries it every turn by itself)."""
        streak: Streak | None = getattr(self, "_settle_failures", None)
        if streak is None:
            streak = self._settle_failures = Streak(where_of(self.url), "settle")
        return streak

    def peek_revocations(self, store: Any) -> bool:
        """``RECEIVE`` reads each leased task's meta in ``store`` when the store lives on
        this connection's server: the worker's revocation check of a received batch then
        costs no round trip of its own (``Delivery.stored_meta``)."""
        self._peek = store.task_key("") if store is not None and self.carries(store) else ""
        return bool(self._peek)

    def carries(self, store: Any) -> bool:
        """True when ``store``'s writes can ride in this broker's round trips."""
        return (type(store) is RedisResultStore
                and store._connection()[3] is self._connection()[3])

    def settle_and_receive(self, store: Any, results: Sequence[tuple[str, Mapping[str, Any]]],
                           expires: float | None, acks: Sequence[Delivery],
                           queues: Sequence[str], *, owner: str,
                           limit: int = 1) -> tuple[list[bool], int, list[Delivery]]:
        if (not results or len(results) > _MOST or len(acks) > _MOST
                or not self.carries(store)):
            return Broker.settle_and_receive(self, store, results,  # type: ignore[arg-type]
                                             expires, acks, queues, owner=owner, limit=limit)
        queues = list(dict.fromkeys(queues))
        rows = store.guarded_rows(results)
        zsets = list(dict.fromkeys(self._key(f"_celeriac.leases.{d.queue}") for d in acks))
        owners = list(dict.fromkeys(self._key(f"_celeriac.owner.{d.owner}") for d in acks))
        keys = [key for key, _, _ in rows]  # the broker's key names (see its layout)
        keys += [self._key(f"_celeriac.lease.{d.token}") for d in acks]
        keys += zsets + owners
        args = [store.ttl_argument(expires), len(rows), len(acks), len(zsets),
                *(x for _, value, guard in rows for x in (value, guard)),
                *(d.token for d in acks)]
        _, _, scripts, direct = self._connection()
        commands = [evalsha(scripts["settle"], keys, args)]
        if queues:
            commands.append(evalsha(scripts["receive"], [], [
                self.prefix, *self._receive_args(queues, owner, max(1, int(limit)))]))
        streak = self._settle_streak
        try:
            replies = run_pipeline(direct, commands, [scripts["settle"], scripts["receive"]],
                                   raise_errors=False)
        except RETRYABLE_ERRORS as exc:  # nothing settled: the caller keeps it all
            streak.failed(exc)
            raise OperationalError(f"{streak.where}: settle failed: {exc}") from exc
        streak.ok()
        failed = [r for r in replies if isinstance(r, redis.ResponseError)]
        got, hint = self._deliveries(replies[1], queues, owner) if len(replies) > 1 and not (
            isinstance(replies[1], redis.ResponseError)) else ([], None)
        if queues and not got and not failed:  # the next receive may wait at once
            self._found_nothing(queues, owner, hint)
        if failed:  # nothing was acknowledged (SETTLE stopped at the failed write)
            for delivery in got:  # leased in the same trip: back to the queue, not lost
                self.release(delivery)
            raise failed[0]
        flags = replies[0]
        return [bool(int(f)) for f in flags[:-1]], int(flags[-1]), got
