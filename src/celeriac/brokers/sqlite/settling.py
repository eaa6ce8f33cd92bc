"""A worker's loop turn on SQLite in one transaction: results, acknowledgements, lease.

Mixed into :class:`~.broker.SQLiteBroker`. When the worker's result store is a
:class:`~.results.SQLiteResultStore` in the broker's own file (the default:
``sqlite://`` for both), :meth:`SQLiteSettling.settle_and_receive` writes the
batched results (under the REVOKED rule), deletes the acknowledged messages and
leases what is ready in one ``BEGIN IMMEDIATE`` transaction: one commit per loop
turn instead of two, and the results commit with their acknowledgements (never
an acknowledgement without its result). Any other store: the broker interface's
default (the results first, then ``ack_and_receive``).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..base import Broker, Delivery
from .results import UPSERT_META, SQLiteResultStore


class SQLiteSettling(Broker):
    """``settle_and_receive`` in one transaction with a result store in the same file."""

    path: str
    _lease: Callable[..., tuple[int, list[Delivery]]]

    def settle_and_receive(self, store: Any, results: Sequence[tuple[str, Mapping[str, Any]]],
                           expires: float | None, acks: Sequence[Delivery],
                           queues: Sequence[str], *, owner: str,
                           limit: int = 1) -> tuple[list[bool], int, list[Delivery]]:
        names = list(dict.fromkeys(queues))
        if not (results and names and isinstance(store, SQLiteResultStore)
                and os.path.abspath(store.path) == os.path.abspath(self.path)):
            return super().settle_and_receive(store, results, expires, acks, queues,
                                              owner=owner, limit=limit)
        params = store.upsert_params(list(results), expires)
        written: list[bool] = []

        def store_first(conn: sqlite3.Connection) -> None:
            written.extend(conn.execute(UPSERT_META, p).rowcount == 1 for p in params)

        done, got = self._lease(names, owner, max(1, limit), acks, before=store_first,
                                durable=store.durable)
        return written, done, got
