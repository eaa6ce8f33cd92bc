"""A worker's loop turn on Redis in one round trip: results, acknowledgements, the lease.

When the worker's result store lives on the broker's Redis (the same client,
hence the same per-thread connection), :meth:`RedisSettling.settle_and_receive`
pipelines the ``SETTLE`` script (:mod:`.result_scripts`: the batch's results
written under the REVOKED rule, then its acknowledgements, in one atomic step,
so a failed write acknowledges nothing) and ``RECEIVE``. Every key ``SETTLE``
touches is passed in ``KEYS`` (task meta keys, and per acknowledgement its lease,
its queue's lease set and its owner's set). Otherwise the broker interface's
default runs: ``set_many``, then ``ack_and_receive``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import redis

from ..base import Broker, Delivery
from .client import evalsha, run_pipeline
from .results import RedisResultStore

if TYPE_CHECKING:
    from .client import Connection

_MOST = 1000  # results, and acknowledgements, carried in one script call


class RedisSettling:
    """Mixed into :class:`~celeriac.brokers.redis.broker.RedisBroker`."""

    prefix: str

    if TYPE_CHECKING:
        def _connection(self) -> Connection: ...

        def _receive_args(self, queues: list[str], owner: str, limit: int) -> list[Any]: ...

        def _deliveries(self, reply: list[Any], queues: list[str],
                        owner: str) -> tuple[list[Delivery], float | None]: ...

        def release(self, delivery: Delivery, *, not_before: float | None = None,
                    failed: bool = False) -> bool: ...

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
        p = self.prefix
        keys = [key for key, _, _ in rows] + [
            key for d in acks for key in (f"{p}_celeriac.lease.{d.token}",
                                          f"{p}_celeriac.leases.{d.queue}",
                                          f"{p}_celeriac.owner.{d.owner}")]
        args = [store.ttl_argument(expires), len(rows),
                *(x for _, value, guard in rows for x in (value, guard)),
                *(d.token for d in acks)]
        _, _, scripts, direct = self._connection()
        commands = [evalsha(scripts["settle"], keys, args)]
        if queues:
            commands.append(evalsha(scripts["receive"], [], [
                p, *self._receive_args(queues, owner, max(1, int(limit)))]))
        replies = run_pipeline(direct, commands, [scripts["settle"], scripts["receive"]],
                               raise_errors=False)
        failed = [r for r in replies if isinstance(r, redis.ResponseError)]
        got = self._deliveries(replies[1], queues, owner)[0] if len(replies) > 1 and not (
            isinstance(replies[1], redis.ResponseError)) else []
        if failed:  # nothing was acknowledged (SETTLE stopped at the failed write)
            for delivery in got:  # leased in the same trip: back to the queue, not lost
                self.release(delivery)
            raise failed[0]
        flags = replies[0]
        return [bool(int(f)) for f in flags[:-1]], int(flags[-1]), got
