"""Keeping the queue and result tables small: deleting expired results and vacuuming.

Acknowledged messages are deleted at once, so the queue table holds only waiting and
running work; what remains to do is reclaiming the space of deleted rows (VACUUM) and
removing expired results. With autovacuum on, the migration's per-table settings
(vacuum after 2,000 dead rows, whatever the table size) let PostgreSQL do the first.
With autovacuum off (option ``vacuum=auto``, the default) celeriac does it itself:
every process counts the rows it deleted or rewrote and, past
:data:`VACUUM_AFTER_ROWS` or every :data:`CHECK_EVERY` seconds of activity, one
background thread checks ``pg_stat_user_tables`` and runs ``VACUUM`` on a table with
more than :data:`DEAD_ROWS_MIN` dead rows (and more dead than a fifth of its live
rows). Expired results, chord parts and counters are deleted on the same schedule.
Only one process of the fleet does either at a time (``pg_try_advisory_lock``). A
missing privilege (VACUUM needs the table owner) is logged once, then skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import psycopg

if TYPE_CHECKING:
    from .db import Database

logger = logging.getLogger("celeriac.postgres")

VACUUM_AFTER_ROWS = 20_000
CHECK_EVERY = 300.0
DEAD_ROWS_MIN = 5_000
TABLES = ("messages", "results", "chord_parts", "chords", "dead_letters")

_HEALTH = """
SELECT relname, n_live_tup, n_dead_tup, current_setting('autovacuum')
FROM pg_stat_user_tables WHERE schemaname = %s AND relname = ANY(%s)
"""


class Maintenance:
    """Per-process bookkeeping that triggers cleanup and VACUUM now and then."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.enabled = db.settings.vacuum == "auto"
        self._lock = threading.Lock()
        self._rows = 0
        self._last = time.monotonic()
        self._running = False
        self._denied = False
        self.runs = 0

    def note(self, rows: int) -> None:
        """Count rows deleted or rewritten; start a check in the background when due."""
        if rows <= 0 or not self.enabled:
            return
        with self._lock:
            self._rows += rows
            due = (self._rows >= VACUUM_AFTER_ROWS
                   or time.monotonic() - self._last >= CHECK_EVERY)
            if not due or self._running:
                return
            self._running, self._rows, self._last = True, 0, time.monotonic()
        threading.Thread(target=self._run, name="celeriac-pg-maintenance", daemon=True).start()

    def _run(self) -> None:
        try:
            self.run_once()
        except Exception as exc:  # never let housekeeping hurt the worker
            logger.warning("postgres maintenance failed: %s", exc)
        finally:
            with self._lock:
                self._running = False

    def run_once(self, *, force: bool = False) -> list[str]:
        """Delete expired results and vacuum tables that need it; return what was vacuumed."""
        schema, lock = self.db.schema, f"celeriac-maintenance:{self.db.schema}"
        vacuumed: list[str] = []
        with self.db.connection() as conn:
            got = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (lock,)).fetchone()
            if not got or not got[0]:
                return vacuumed
            try:
                conn.execute(self.db.sql["result_cleanup"])
                rows = conn.execute(_HEALTH, (schema, list(TABLES))).fetchall()
                for name, live, dead, autovacuum in rows:
                    if self._denied or (autovacuum == "on" and not force):
                        continue
                    wanted = force or (dead >= DEAD_ROWS_MIN and dead * 5 >= live)
                    if wanted and self._vacuum(conn, f"{schema}.{name}"):
                        vacuumed.append(name)
            finally:
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (lock,))
        self.runs += 1
        return vacuumed

    def _vacuum(self, conn: psycopg.Connection[Any], table: str) -> bool:
        try:
            conn.execute(f"VACUUM {table}")
            return True
        except psycopg.errors.InsufficientPrivilege as exc:
            self._denied = True
            logger.warning("postgres: cannot VACUUM %s (%s); with autovacuum off the table "
                           "grows until its owner vacuums it (docs/postgres.md)", table, exc)
            return False
