"""The persistent task history: schema, merging writes, filtered pages, retention.

:class:`HistoryStore` keeps task records, their attempts and the audit log in
one database (:mod:`.engines`). Every listing is ordered by first-seen time
(``ts``) and paged by keyset (``before`` = the last row's ``(ts, task_id)``),
so a page costs the same at row 10 and at row 1,000,000; each filter column
has an index ending in ``ts`` (:data:`INDEXES`), which is what keeps pages
fast on a large history. ``text`` (a substring of args/kwargs) has no index:
it walks the time index and stops at one page.

Writes merge: :meth:`HistoryStore.apply_events` loads the records of a batch,
folds the events in (:mod:`.merge`) and writes them back in one transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from .engines import Cursor, Database
from .merge import FINAL_STATES, apply_event, apply_result
from .records import ATTEMPT_COLUMNS, TASK_COLUMNS, Attempt, AuditEntry, TaskFilter, TaskRecord

SCHEMA_VERSION = 1

_TEXT_COLUMNS = {"task_id", "name", "state", "queue", "routing_key", "worker", "args", "kwargs",
                 "result", "exception", "traceback", "root_id", "parent_id", "eta", "expires",
                 "retried_from", "source"}
_INT_COLUMNS = {"retries"}

TABLES = [
    "CREATE TABLE IF NOT EXISTS dashboard_tasks (" + ", ".join(
        f"{c} {'TEXT' if c in _TEXT_COLUMNS else 'INTEGER' if c in _INT_COLUMNS else 'REAL'}"
        + (" PRIMARY KEY" if c == "task_id" else "") for c in TASK_COLUMNS) + ")",
    "CREATE TABLE IF NOT EXISTS dashboard_attempts (task_id TEXT NOT NULL, attempt INTEGER "
    "NOT NULL, worker TEXT, received_at REAL, started_at REAL, finished_at REAL, state TEXT, "
    "runtime REAL, exception TEXT, PRIMARY KEY (task_id, attempt))",
    "CREATE TABLE IF NOT EXISTS dashboard_audit (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "ts REAL NOT NULL, username TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, "
    "detail TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS dashboard_meta (key TEXT PRIMARY KEY, value TEXT)",
    # tasks finished per minute and final state, kept as they finish: the charts read this
    "CREATE TABLE IF NOT EXISTS dashboard_throughput (minute INTEGER NOT NULL, state TEXT "
    "NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (minute, state))",
]

#: Index name -> columns. Every filter a page offers is served by one of them.
INDEXES = {
    "dashboard_tasks_ts": "ts, task_id",
    "dashboard_tasks_state": "state, ts, task_id",
    "dashboard_tasks_name": "name, ts, task_id",
    "dashboard_tasks_queue": "queue, ts, task_id",
    "dashboard_tasks_worker": "worker, ts, task_id",
    "dashboard_tasks_parent": "parent_id, ts, task_id",
    "dashboard_tasks_root": "root_id, ts, task_id",
    "dashboard_tasks_retried": "retried_from, ts",
    "dashboard_audit_ts": "ts",
}
#: Tables of the index names above.
_INDEX_TABLE = {"dashboard_audit_ts": "dashboard_audit"}


def _where(flt: TaskFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if flt.states:
        clauses.append(f"state IN ({', '.join('?' for _ in flt.states)})")
        params.extend(flt.states)
    if flt.name:
        if flt.name.endswith("*"):
            prefix = flt.name[:-1]
            clauses.append("name >= ? AND name < ?")
            params.extend([prefix, prefix + "\uffff"])
        else:
            clauses.append("name = ?")
            params.append(flt.name)
    for key in ("queue", "worker", "root_id", "parent_id"):
        value = getattr(flt, key)
        if value:
            clauses.append(f"{key} = ?")
            params.append(value)
    if flt.since is not None:
        clauses.append("ts >= ?")
        params.append(flt.since)
    if flt.until is not None:
        clauses.append("ts < ?")
        params.append(flt.until)
    if flt.text:
        pattern = "%" + flt.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        clauses.append("(args LIKE ? ESCAPE '\\' OR kwargs LIKE ? ESCAPE '\\')")
        params.extend([pattern, pattern])
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


class HistoryStore:
    """Task history, attempts and the audit log in one database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.migrate()

    def migrate(self) -> None:
        def work(cur: Cursor) -> None:
            for statement in TABLES:
                cur.execute(statement)
            for name, columns in INDEXES.items():
                table = _INDEX_TABLE.get(name, "dashboard_tasks")
                cur.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})")
            cur.execute("INSERT INTO dashboard_meta (key, value) VALUES ('schema_version', ?) "
                        "ON CONFLICT (key) DO NOTHING", (str(SCHEMA_VERSION),))

        self.db.write(work)

    # -- writing -------------------------------------------------------------------
    def _load(self, cur: Cursor | None, ids: Sequence[str]
              ) -> tuple[dict[str, TaskRecord], dict[str, dict[int, Attempt]]]:
        records: dict[str, TaskRecord] = {}
        attempts: dict[str, dict[int, Attempt]] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start:start + 500])
            marks = ", ".join("?" for _ in chunk)
            lock = " FOR UPDATE" if self.db.kind == "postgres" and cur is not None else ""
            task_sql = (f"SELECT {', '.join(TASK_COLUMNS)} FROM dashboard_tasks "
                        f"WHERE task_id IN ({marks}){lock}")
            attempt_sql = (f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM dashboard_attempts "
                           f"WHERE task_id IN ({marks})")
            if cur is None:
                task_rows, attempt_rows = self.db.read(task_sql, chunk), self.db.read(
                    attempt_sql, chunk)
            else:
                cur.execute(task_sql, chunk)
                task_rows = cur.fetchall()
                cur.execute(attempt_sql, chunk)
                attempt_rows = cur.fetchall()
            for row in task_rows:
                rec = TaskRecord.from_row(row)
                records[rec.task_id] = rec
            for row in attempt_rows:
                att = Attempt.from_row(row)
                attempts.setdefault(att.task_id, {})[att.attempt] = att
        return records, attempts

    @staticmethod
    def _count_finished(cur: Cursor, before: dict[str, str],
                        records: Iterable[TaskRecord]) -> None:
        """Add the records that just reached a final state to the per-minute counts."""
        counts: dict[tuple[int, str], int] = {}
        for r in records:
            if r.state in FINAL_STATES and before.get(r.task_id) not in FINAL_STATES:
                key = (int((r.finished_at or r.state_ts or r.ts) // 60), r.state)
                counts[key] = counts.get(key, 0) + 1
        if counts:
            cur.executemany(
                "INSERT INTO dashboard_throughput (minute, state, n) VALUES (?, ?, ?) "
                "ON CONFLICT (minute, state) DO UPDATE SET n = dashboard_throughput.n + "
                "excluded.n", [(m, st, n) for (m, st), n in sorted(counts.items())])

    @staticmethod
    def _save(cur: Cursor, records: Iterable[TaskRecord],
              attempts: Iterable[Attempt]) -> None:
        updates = ", ".join(f"{c} = excluded.{c}" for c in TASK_COLUMNS[1:])
        cur.executemany(
            f"INSERT INTO dashboard_tasks ({', '.join(TASK_COLUMNS)}) VALUES "
            f"({', '.join('?' for _ in TASK_COLUMNS)}) ON CONFLICT (task_id) DO UPDATE SET "
            f"{updates}", [r.as_row() for r in records])
        rows = [a.as_row() for a in attempts]
        if rows:
            att_updates = ", ".join(f"{c} = excluded.{c}" for c in ATTEMPT_COLUMNS[2:])
            cur.executemany(
                f"INSERT INTO dashboard_attempts ({', '.join(ATTEMPT_COLUMNS)}) VALUES "
                f"({', '.join('?' for _ in ATTEMPT_COLUMNS)}) ON CONFLICT (task_id, attempt) "
                f"DO UPDATE SET {att_updates}", rows)

    def apply_events(self, events: Sequence[dict[str, Any]]) -> int:
        """Fold task events into their records (one transaction); returns tasks touched."""
        task_events = [e for e in events if str(e.get("type", "")).startswith("task-")
                       and e.get("uuid")]
        if not task_events:
            return 0
        ids = list(dict.fromkeys(str(e["uuid"]) for e in task_events))

        def work(cur: Cursor) -> int:
            records, attempts = self._load(cur, ids)
            before = {tid: r.state for tid, r in records.items()}
            for event in sorted(task_events, key=lambda e: float(e.get("timestamp") or 0)):
                tid = str(event["uuid"])
                record = records.setdefault(tid, TaskRecord(task_id=tid))
                apply_event(record, attempts.setdefault(tid, {}), event)
            self._save(cur, records.values(),
                       [a for tid in ids for a in attempts.get(tid, {}).values()])
            self._count_finished(cur, before, records.values())
            return len(records)

        return self.db.write(work)

    def put(self, record: TaskRecord) -> None:
        """Write one record as it is (the dashboard's own sends)."""

        def work(cur: Cursor) -> None:
            old = self._load(cur, [record.task_id])[0].get(record.task_id)
            self._save(cur, [record], [])
            self._count_finished(cur, {record.task_id: old.state} if old else {}, [record])

        self.db.write(work)

    def apply_results(self, metas: dict[str, dict[str, Any]], now: float | None = None) -> int:
        """Fill records from result-store metas; returns how many changed."""
        if not metas:
            return 0
        now = time.time() if now is None else now

        def work(cur: Cursor) -> int:
            records, _ = self._load(cur, list(metas))
            before = {tid: r.state for tid, r in records.items()}
            changed = [r for tid, r in records.items() if apply_result(r, metas[tid], now)]
            self._save(cur, changed, [])
            self._count_finished(cur, before, changed)
            return len(changed)

        return self.db.write(work)

    def unfinished(self, since: float, limit: int = 500) -> list[str]:
        """Ids of records not in a final state, first seen after ``since`` (newest first)."""
        states = sorted({"SENT", "PENDING", "RECEIVED", "STARTED", "RETRY"})
        rows = self.db.read(
            f"SELECT task_id FROM dashboard_tasks WHERE state IN "
            f"({', '.join('?' for _ in states)}) AND ts >= ? ORDER BY ts DESC LIMIT ?",
            [*states, since, limit])
        return [r[0] for r in rows]

    # -- reading -------------------------------------------------------------------
    def get(self, task_id: str) -> TaskRecord | None:
        records, _ = self._load(None, [task_id])
        return records.get(task_id)

    def attempts(self, task_id: str) -> list[Attempt]:
        _, attempts = self._load(None, [task_id])
        return [attempts[task_id][n] for n in sorted(attempts.get(task_id, {}))]

    def page_sql(self, flt: TaskFilter, limit: int,
                 before: tuple[float, str] | None = None) -> tuple[str, list[Any]]:
        where, params = _where(flt)
        if before is not None:
            where += (" AND " if where else " WHERE ") + "(ts, task_id) < (?, ?)"
            params.extend([before[0], before[1]])
        return (f"SELECT {', '.join(TASK_COLUMNS)} FROM dashboard_tasks{where} "
                f"ORDER BY ts DESC, task_id DESC LIMIT ?", [*params, limit])

    def page(self, flt: TaskFilter, limit: int = 50,
             before: tuple[float, str] | None = None) -> tuple[list[TaskRecord], bool]:
        """One page of matching records, newest first; and whether more follow."""
        sql, params = self.page_sql(flt, limit + 1, before)
        rows = [TaskRecord.from_row(r) for r in self.db.read(sql, params)]
        return rows[:limit], len(rows) > limit

    def count(self, flt: TaskFilter, cap: int | None = None) -> int:
        where, params = _where(flt)
        if cap is None:
            return int(self.db.read(f"SELECT COUNT(*) FROM dashboard_tasks{where}", params)[0][0])
        return int(self.db.read(f"SELECT COUNT(*) FROM (SELECT 1 FROM dashboard_tasks{where} "
                                f"LIMIT ?) AS capped", [*params, cap])[0][0])

    def matching_ids(self, flt: TaskFilter, limit: int) -> list[str]:
        where, params = _where(flt)
        rows = self.db.read(f"SELECT task_id FROM dashboard_tasks{where} ORDER BY ts DESC "
                            f"LIMIT ?", [*params, limit])
        return [r[0] for r in rows]

    def children(self, task_id: str, limit: int = 200) -> list[TaskRecord]:
        return self.page(TaskFilter(parent_id=task_id), limit)[0]

    def family(self, root_id: str, limit: int = 500) -> list[TaskRecord]:
        """Every task of one workflow (same root id), for the chain/chord graph."""
        return self.page(TaskFilter(root_id=root_id), limit)[0]

    def retries_of(self, task_id: str) -> list[str]:
        rows = self.db.read("SELECT task_id FROM dashboard_tasks WHERE retried_from = ? "
                            "ORDER BY ts", [task_id])
        return [r[0] for r in rows]

    def throughput(self, since: float, bucket: float) -> list[tuple[float, str, int]]:
        """(bucket start, final state, count) of tasks that finished after ``since``
        (``bucket``: seconds, a multiple of 60), from the per-minute counts."""
        rows = self.db.read("SELECT minute, state, n FROM dashboard_throughput "
                            "WHERE minute >= ?", [int(since // 60)])
        sums: dict[tuple[float, str], int] = {}
        for minute, state, n in rows:
            key = (float(minute * 60) // bucket * bucket, str(state))
            sums[key] = sums.get(key, 0) + int(n)
        return [(b, st, n) for (b, st), n in sorted(sums.items())]

    def times_to_start(self, queue: str, since: float, limit: int = 5000) -> list[float]:
        rows = self.db.read(
            "SELECT started_at - COALESCE(sent_at, received_at) FROM dashboard_tasks "
            "WHERE queue = ? AND ts >= ? AND started_at IS NOT NULL "
            "ORDER BY ts DESC LIMIT ?", [queue, since, limit])
        return [max(0.0, float(r[0])) for r in rows if r[0] is not None]

    # -- audit ---------------------------------------------------------------------
    def audit(self, user: str, action: str, target: str, detail: str = "",
              ts: float | None = None) -> AuditEntry:
        entry = AuditEntry(ts=time.time() if ts is None else ts, user=user, action=action,
                           target=target, detail=detail)
        self.db.write(lambda cur: cur.execute(
            "INSERT INTO dashboard_audit (ts, username, action, target, detail) "
            "VALUES (?, ?, ?, ?, ?)", (entry.ts, user, action, target, detail)))
        return entry

    def audit_log(self, limit: int = 100, before: int | None = None) -> list[AuditEntry]:
        where, params = (" WHERE id < ?", [before]) if before else ("", [])
        rows = self.db.read(f"SELECT id, ts, username, action, target, detail FROM "
                            f"dashboard_audit{where} ORDER BY id DESC LIMIT ?",
                            [*params, limit])
        return [AuditEntry(id=r[0], ts=r[1], user=r[2], action=r[3], target=r[4], detail=r[5])
                for r in rows]

    # -- retention -----------------------------------------------------------------
    def prune(self, *, older_than: float | None = None, keep: int | None = None,
              batch: int = 5000) -> int:
        """Delete records first seen before ``older_than`` and beyond the newest ``keep``."""
        cutoff = older_than
        if keep is not None:
            row = self.db.read("SELECT ts FROM dashboard_tasks ORDER BY ts DESC LIMIT 1 "
                               "OFFSET ?", [keep])
            if row:
                cutoff = max(cutoff or 0.0, float(row[0][0]) + 1e-6)
        if cutoff is None:
            return 0
        if older_than is not None:
            self.db.write(lambda cur: cur.execute(
                "DELETE FROM dashboard_throughput WHERE minute < ?", [int(older_than // 60)]))
        removed = 0
        while True:
            ids = [r[0] for r in self.db.read(
                "SELECT task_id FROM dashboard_tasks WHERE ts < ? LIMIT ?", [cutoff, batch])]
            if not ids:
                return removed
            marks = ", ".join("?" for _ in ids)

            def work(cur: Cursor, ids: list[str] = ids, marks: str = marks) -> None:
                cur.execute(f"DELETE FROM dashboard_attempts WHERE task_id IN ({marks})", ids)
                cur.execute(f"DELETE FROM dashboard_tasks WHERE task_id IN ({marks})", ids)

            self.db.write(work)
            removed += len(ids)

    def forget(self, ids: Sequence[str]) -> int:
        """Delete these records and their attempts; returns how many there were."""
        removed = 0
        for start in range(0, len(ids), 500):
            chunk = list(ids[start:start + 500])
            marks = ", ".join("?" for _ in chunk)
            removed += int(self.db.read(
                f"SELECT COUNT(*) FROM dashboard_tasks WHERE task_id IN ({marks})", chunk)[0][0])

            def work(cur: Cursor, chunk: list[str] = chunk, marks: str = marks) -> None:
                cur.execute(f"DELETE FROM dashboard_attempts WHERE task_id IN ({marks})", chunk)
                cur.execute(f"DELETE FROM dashboard_tasks WHERE task_id IN ({marks})", chunk)

            self.db.write(work)
        return removed

    def prune_audit(self, older_than: float) -> None:
        self.db.write(lambda cur: cur.execute("DELETE FROM dashboard_audit WHERE ts < ?",
                                              [older_than]))

    def close(self) -> None:
        self.db.close()
