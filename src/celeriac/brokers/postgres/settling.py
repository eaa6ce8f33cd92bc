"""A worker's loop turn on PostgreSQL in one round trip and one transaction: results,
acknowledgements, the next lease.

When the worker's result store is this broker's database and schema (the same
:class:`~.db.Database` in this process), :meth:`PostgresSettling.settle_and_receive`
sends ``result_write`` (the batch's task metas under the REVOKED rule) and
``ack_and_lease`` (its acknowledgements, fenced by their tokens, then a lease of what
is ready) in one pipeline inside one transaction on one connection: one round trip
and one (asynchronous) commit per turn instead of two of each. The results and the
acknowledgements commit together or not at all, so an acknowledgement is never
visible without its result (stronger than "result first": there is no moment
between the two). Otherwise (another database or schema, a batch naming one task
twice, more than 1,000 results or acknowledgements) the broker interface's default
runs: ``set_many``, then ``ack_and_receive``.

Failures: one attempt. A connection error settles nothing and is raised as
:class:`~celeriac.exceptions.OperationalError` (and counted by the database's outage
streak); any other error rolls the transaction back and is raised. The consumer
keeps the results and acknowledgements for its next turn either way.

Also here: the lease statement's parameters and how its rows become deliveries
(shared with :meth:`PostgresBroker.ack_and_receive`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ... import states
from ...messages import parse_envelope
from ...results.store import encode_meta
from ..base import Broker, Delivery, envelope_bytes
from .results import PostgresResultStore, _ttl

if TYPE_CHECKING:
    from .db import Database


class _PipelineCleanupNoise(logging.Filter):
    """psycopg logs "error ignored terminating <Pipeline>: the connection is lost" when a
    pipeline block already raised: that error is the one the worker handles and reports
    (one line per outage), so this second line about a pipeline is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (record.msg == "error ignored terminating %r: %s" and args
                    and type(args[0]).__name__ == "Pipeline")


logging.getLogger("psycopg").addFilter(_PipelineCleanupNoise())


#: results, and acknowledgements, carried in one settling turn
MOST = 1000


def _token_ok(token: str) -> bool:
    try:
        uuid.UUID(token)
        return True
    except (ValueError, TypeError, AttributeError):
        return False


def tagged(deliveries: Iterable[Delivery]) -> tuple[list[int], list[str], list[Delivery]]:
    """Row ids and lease tokens of the deliveries this broker handed out."""
    ids, tokens, kept = [], [], []
    for d in deliveries:
        if d.tag.isdigit() and _token_ok(d.token):
            ids.append(int(d.tag))
            tokens.append(d.token)
            kept.append(d)
    return ids, tokens, kept


def lease_params(acks: Sequence[Delivery], queues: list[str], owner: str, limit: int,
                 lease_seconds: float) -> dict[str, Any]:
    """The parameters of ``ack_and_lease``."""
    ids, tokens, _ = tagged(acks)
    return {"ack_ids": ids, "ack_tokens": tokens, "queues": queues, "limit": limit,
            "owner": owner, "lease_seconds": lease_seconds}


def leased(rows: Iterable[tuple[Any, ...]], owner: str) -> tuple[int, list[Delivery], int]:
    """``ack_and_lease``'s rows as (acknowledged, deliveries in serving order, rows
    promoted or reclaimed)."""
    acked = changed = 0
    got: list[tuple[Any, ...]] = []
    for row in rows:
        if row[0] is None:
            acked, changed = row[5], row[6]
        else:
            got.append(row)
    got.sort(key=lambda r: (r[2], r[0]))
    return acked, [Delivery(message=parse_envelope(env), queue=queue, tag=str(mid),
                            token=token, owner=owner, redelivered=count > 1,
                            delivery_count=count, lost_count=lost, lease_expires=expires,
                            published_at=published, envelope_size=envelope_bytes(env))
                   for mid, queue, _prio, env, token, count, lost, expires, published
                   in got], changed


class PostgresSettling:
    """Mixed into :class:`~celeriac.brokers.postgres.broker.PostgresBroker`."""

    lease_seconds: float

    if TYPE_CHECKING:
        @property
        def db(self) -> Database: ...

        def _lease(self, acks: Sequence[Delivery], queues: list[str], owner: str,
                   limit: int) -> tuple[int, list[Delivery], int]: ...

        def _forget_idle(self, queues: list[str]) -> None: ...

    def carries(self, store: Any) -> bool:
        """True when ``store``'s writes can share this broker's transactions."""
        return type(store) is PostgresResultStore and store.db is self.db

    def settle_and_receive(self, store: Any, results: Sequence[tuple[str, Mapping[str, Any]]],
                           expires: float | None, acks: Sequence[Delivery],
                           queues: Sequence[str], *, owner: str,
                           limit: int = 1) -> tuple[list[bool], int, list[Delivery]]:
        names = list(dict.fromkeys(queues))
        rows = [(store.task_key(tid), encode_meta(meta), meta.get("status") != states.REVOKED)
                for tid, meta in results] if results and self.carries(store) else []
        if (not rows or not names or len(rows) > MOST or len(acks) > MOST
                or len({key for key, _, _ in rows}) < len(rows)):
            return Broker.settle_and_receive(self, store, results,  # type: ignore[arg-type]
                                             expires, acks, queues, owner=owner, limit=limit)
        db = self.db
        ttl = _ttl(store.expires if expires == -1 else expires)
        write = {"keys": [k for k, _, _ in rows], "values": [v for _, v, _ in rows],
                 "guards": [g for _, _, g in rows], "expires": ttl, "fast": True}
        lease = lease_params(acks, names, owner, max(1, int(limit)), self.lease_seconds)

        def work(conn: Any) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
            with conn.pipeline():  # up to its one Sync: one implicit transaction
                wrote = conn.execute(db.sql["result_write"], write)
                took = conn.execute(db.sql["ack_and_lease"], lease)
            return wrote.fetchall(), took.fetchall()

        wrote, took = db.run(work, what="settle")
        self._forget_idle(names)  # what is ready now is known only to the next query
        stored = {key for key, *_ in wrote}
        done, got, changed = leased(took, owner)
        db.maintenance.note(len(rows) + done)
        if not got and changed:  # promoted or reclaimed rows: lease them now
            got = self._lease((), names, owner, max(1, int(limit)))[1]
        return [key in stored for key, _, _ in rows], done, got
