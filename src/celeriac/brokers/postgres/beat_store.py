"""The PostgreSQL schedule store: beat entries, fire-time claims and the leader lease.

Used when the broker (or ``beat_schedule_store``) is a ``postgresql://`` URL; the
tables (``beat_entries``, ``beat_fires``, ``beat_meta``) sit in the broker's schema
(see ``migrations/0001_initial.sql``). A claim is one statement: lock the entry row
if it is enabled, at the expected version and behind the fire time, insert the fire
row with ``INSERT ... ON CONFLICT DO NOTHING`` (the primary key ``(entry, fire_us)``
is the fence between schedulers) and advance the cursor only if the insert happened.
Definition writes are compare-and-set on ``version`` and bump the generation counter
in the same transaction. Every statement retries connection errors by ``retry_policy``
through :func:`celeriac.retry.call`, then raises
:class:`~celeriac.exceptions.OperationalError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ...retry import RetryPolicy
from ...schedules.entries import StoredEntry
from ...schedules.store import (
    SENT,
    FireRecord,
    ScheduleStore,
    entry_from_row,
    fire_from_row,
    to_us,
)
from .db import Database, Handle, parse_url


class PostgresStore(ScheduleStore):
    """Schedule store in PostgreSQL (the broker's database and schema)."""

    def __init__(self, url: str, *, app: Any = None,
                 options: Mapping[str, Any] | None = None) -> None:
        self.url = url
        options = dict(options or {})
        self.retry_policy = RetryPolicy.from_celery(options.pop("retry_policy", None))
        self.settings = parse_url(url, options, what="beat_schedule_store")
        self._app = app
        self._handle = Handle(self.settings)

    @property
    def db(self) -> Database:
        return self._handle.db

    def _rows(self, statement: str, /, **params: Any) -> list[tuple[Any, ...]]:
        return self.db.execute(statement, params, policy=self.retry_policy,
                               what=f"beat {statement.removeprefix('beat_')}")

    def _count(self, statement: str, /, **params: Any) -> int:
        return int(self._rows(statement, **params)[0][0])

    # -- rows ------------------------------------------------------------------------
    def _entry(self, row: tuple[Any, ...]) -> StoredEntry:
        return entry_from_row(row, self._app)


    # -- entries -----------------------------------------------------------------------
    def list_entries(self) -> list[StoredEntry]:
        return [self._entry(r) for r in self._rows("beat_list_entries")]

    def get_entry(self, name: str) -> StoredEntry | None:
        rows = self._rows("beat_get_entry", name=name)
        return self._entry(rows[0]) if rows else None

    def generation(self) -> int:
        rows = self._rows("beat_generation")
        return int(rows[0][0]) if rows else 0

    def _write_and_bump(self, name: str, params: dict[str, Any]) -> bool:
        statements = self.db.sql

        def work(conn: Any) -> bool:
            with conn.transaction():
                if conn.execute(statements[name], params).rowcount != 1:
                    return False
                conn.execute(statements["beat_bump"])
                return True

        return self.db.run(work, policy=self.retry_policy,
                           what=f"beat {name.removeprefix('beat_')}")

    def put_entry(self, entry: StoredEntry, expected_version: int | None) -> bool:
        params = {"name": entry.name,
                  "definition": json.dumps(entry.spec.definition(), sort_keys=True),
                  "enabled": bool(entry.enabled), "version": entry.version,
                  "anchor_us": to_us(entry.anchor), "source": entry.source,
                  "code_hash": entry.code_hash, "expected": expected_version}
        if expected_version is None:
            return self._write_and_bump("beat_insert_entry", params)
        return self._write_and_bump("beat_update_entry", params)

    def delete_entry(self, name: str) -> bool:
        return self._write_and_bump("beat_delete_entry", {"name": name})

    # -- fires ---------------------------------------------------------------------------
    def claim_fire(self, record: FireRecord, version: int) -> bool:
        params = {"entry": record.entry, "version": version,
                  "fire_us": to_us(record.fire_time), "task_id": record.task_id,
                  "payload": json.dumps(record.payload), "owner": record.owner,
                  "claimed_us": to_us(record.claimed_at), "state": record.state}
        statement = "beat_claim_manual" if record.manual else "beat_claim"
        return self._count(statement, **params) == 1

    def drop_through(self, name: str, version: int, instant: datetime) -> bool:
        return self._count("beat_drop_through", name=name, version=version,
                           instant_us=to_us(instant)) == 1

    def mark_sent(self, entry: str, fire_time: datetime, sent_at: datetime) -> None:
        self._rows("beat_mark_sent", entry=entry, fire_us=to_us(fire_time),
                   sent_us=to_us(sent_at))

    def stale_claims(self, claimed_before: datetime) -> list[FireRecord]:
        return [fire_from_row(r) for r in self._rows("beat_stale_claims",
                                                  before_us=to_us(claimed_before))]

    def take_over(self, record: FireRecord, owner: str, now: datetime,
                  claimed_before: datetime) -> bool:
        return self._count("beat_take_over", owner=owner, now_us=to_us(now),
                           entry=record.entry, fire_us=to_us(record.fire_time),
                           claimed_us=to_us(record.claimed_at),
                           before_us=to_us(claimed_before)) == 1

    def list_fires(self, entry: str | None = None) -> list[FireRecord]:
        return [fire_from_row(r) for r in self._rows("beat_list_fires", entry=entry)]

    def prune_fires(self, before: datetime) -> int:
        assert SENT == "sent"  # the statement spells the state out
        return self._count("beat_prune_fires", before_us=to_us(before))

    # -- lease -----------------------------------------------------------------------------
    def acquire_lease(self, owner: str, now: datetime, ttl: float) -> bool:
        now_us = to_us(now)
        return self._count("beat_acquire_lease", owner=owner, now_us=now_us,
                           expires_us=now_us + int(ttl * 1_000_000)) == 1

    def release_lease(self, owner: str) -> None:
        self._rows("beat_release_lease", owner=owner)

    def lease_holder(self, now: datetime) -> str | None:
        rows = self._rows("beat_lease_holder", now_us=to_us(now))
        return str(rows[0][0]) if rows else None

    def close(self) -> None:
        self._handle.close()


def store_for_url(url: str, *, app: Any = None, options: Mapping[str, Any] | None = None,
                  prefix: str = "") -> PostgresStore:
    """The store in the schema of ``url`` (the engine registry's beat store; the tables
    are per schema, so ``prefix`` is not needed)."""
    return PostgresStore(url, app=app, options=options)
