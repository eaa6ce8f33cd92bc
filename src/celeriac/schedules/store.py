"""The schedule store interface and the fire record (stores live with their engine).

A store holds three things, each changed only by atomic operations:

* **entries** (``StoredEntry``): definitions are written by :meth:`put_entry`
  (compare-and-set on ``version``); run state (``last_run_at``,
  ``total_run_count``, ``dropped_through``) only by :meth:`claim_fire` and
  :meth:`drop_through`, so an edit can never rewind a cursor;
* **fires** (``FireRecord``), unique per ``(entry, fire_time)``: a claim
  inserts one in state ``claimed`` in the same atomic step that checks the
  entry's version, enabled flag and cursor and advances the cursor; after the
  message is published it is marked ``sent``. This is the fencing that makes a
  fire enqueue once even when two schedulers believe they lead;
* the **leader lease** (an owner id and an expiry), an efficiency device only.

A Django-table store implements the same methods (a transaction with
``select_for_update`` per claim). ``generation()`` changes whenever an entry
definition, enabled flag or membership changes, so schedulers poll it cheaply.
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from .entries import EntrySpec, StoredEntry

UTC = timezone.utc
CLAIMED, SENT = "claimed", "sent"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(instant: datetime) -> int:
    """Microseconds since the epoch (exact, comparable, storable as an integer)."""
    return (instant - EPOCH) // timedelta(microseconds=1)


def from_us(value: int | str | bytes) -> datetime:
    return EPOCH + timedelta(microseconds=int(value))


@dataclass(frozen=True)
class FireRecord:
    """One fire of one entry: what was (or will be) published, and its state."""

    entry: str
    fire_time: datetime
    task_id: str
    payload: dict[str, Any]
    owner: str
    claimed_at: datetime
    state: str = CLAIMED
    sent_at: datetime | None = None
    manual: bool = False


def entry_from_row(row: tuple[Any, ...], app: Any = None) -> StoredEntry:
    """Decode an entry row of a SQL store.

    Columns, in order: name, definition (JSON), enabled, version, anchor_us,
    last_us, dropped_us, total_run_count, source, code_hash.
    """
    (name, definition, enabled, version, anchor_us, last_us, dropped_us, count, source,
     code_hash) = row
    spec = EntrySpec.from_definition(name, json.loads(definition), app=app)
    return StoredEntry(spec=spec, enabled=bool(enabled), version=int(version),
                       anchor=from_us(anchor_us),
                       last_run_at=from_us(last_us) if last_us is not None else None,
                       total_run_count=int(count),
                       dropped_through=from_us(dropped_us) if dropped_us is not None else None,
                       source=source, code_hash=code_hash)


def fire_from_row(row: tuple[Any, ...]) -> FireRecord:
    """Decode a fire row of a SQL store.

    Columns, in order: entry, fire_us, task_id, payload (JSON), owner,
    claimed_us, state, sent_us, manual.
    """
    entry, fire_us, task_id, payload, owner, claimed_us, state, sent_us, manual = row
    return FireRecord(entry=entry, fire_time=from_us(fire_us), task_id=task_id,
                      payload=json.loads(payload), owner=owner,
                      claimed_at=from_us(claimed_us), state=state,
                      sent_at=from_us(sent_us) if sent_us is not None else None,
                      manual=bool(manual))


class ScheduleStore(abc.ABC):
    """Persistent schedule state shared by every scheduler of an app."""

    url: str = ""

    # -- entries -------------------------------------------------------------
    @abc.abstractmethod
    def list_entries(self) -> list[StoredEntry]: ...

    @abc.abstractmethod
    def get_entry(self, name: str) -> StoredEntry | None: ...

    @abc.abstractmethod
    def generation(self) -> int:
        """A number that changes whenever definitions, enabled flags or membership change."""

    @abc.abstractmethod
    def put_entry(self, entry: StoredEntry, expected_version: int | None) -> bool:
        """Write the definition fields of ``entry`` (not its run state).

        ``expected_version=None`` inserts only if the name is free; otherwise the
        write happens only if the stored version equals ``expected_version``.
        """

    @abc.abstractmethod
    def delete_entry(self, name: str) -> bool: ...

    # -- fires ---------------------------------------------------------------
    @abc.abstractmethod
    def claim_fire(self, record: FireRecord, version: int) -> bool:
        """Atomically claim a fire; False if claimed already or the entry moved on.

        A scheduled fire needs: entry present and enabled, stored version ==
        ``version``, ``fire_time`` after the entry's cursor, no record for
        ``(entry, fire_time)``. It sets ``last_run_at = fire_time``. A manual
        fire (``record.manual``) skips the version and cursor checks and leaves
        ``last_run_at`` alone. Both increment ``total_run_count``.
        """

    @abc.abstractmethod
    def drop_through(self, name: str, version: int, instant: datetime) -> bool:
        """Mark every fire at or before ``instant`` as decided without sending it."""

    @abc.abstractmethod
    def mark_sent(self, entry: str, fire_time: datetime, sent_at: datetime) -> None: ...

    @abc.abstractmethod
    def stale_claims(self, claimed_before: datetime) -> list[FireRecord]:
        """Fires still ``claimed`` (not known sent) whose claim is older than the bound."""

    @abc.abstractmethod
    def take_over(self, record: FireRecord, owner: str, now: datetime,
                  claimed_before: datetime) -> bool:
        """Re-own a claim to re-send it, or (``owner`` its claimer) to renew it.

        A compare-and-set: the fire must still be ``claimed`` with exactly
        ``record.claimed_at`` (so two schedulers cannot both take it, and a
        claimer that renewed it in between keeps it), claimed before
        ``claimed_before``. Sets the owner and ``claimed_at = now``.
        """

    @abc.abstractmethod
    def list_fires(self, entry: str | None = None) -> list[FireRecord]: ...

    @abc.abstractmethod
    def prune_fires(self, before: datetime) -> int:
        """Forget sent fires older than ``before`` (the cursor still blocks them)."""

    # -- leader lease ----------------------------------------------------------
    @abc.abstractmethod
    def acquire_lease(self, owner: str, now: datetime, ttl: float) -> bool:
        """Take or renew the lease; True while ``owner`` holds it until ``now + ttl``."""

    @abc.abstractmethod
    def release_lease(self, owner: str) -> None: ...

    @abc.abstractmethod
    def lease_holder(self, now: datetime) -> str | None: ...

    def close(self) -> None:  # noqa: B027 - optional hook, stores without connections skip it
        """Release connections."""

    def close_thread(self) -> None:  # noqa: B027 - optional hook
        """Release the calling thread's connection (a helper thread that is ending)."""


def definition_changed(old: StoredEntry, new: StoredEntry) -> StoredEntry:
    """Carry run state from ``old`` into ``new`` (stores write definitions only)."""
    return replace(new, last_run_at=old.last_run_at, total_run_count=old.total_run_count,
                   dropped_through=old.dropped_through)
