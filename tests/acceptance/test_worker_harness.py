"""The worker harness (``workerharness.py``) counts every run of a task from its own log."""

from __future__ import annotations

import sqlite3
from collections import Counter
from contextlib import closing
from pathlib import Path

from workerharness import Project


def test_harness_counts_runs_per_task(tmp_path: Path) -> None:
    project = Project(tmp_path)
    with closing(sqlite3.connect(project.runs)) as conn, conn:
        conn.executemany("INSERT INTO runs VALUES (?, ?, ?, ?)",
                         [("a", "start", 1, 0.0), ("a", "start", 2, 0.0),
                          ("b", "start", 1, 0.0), ("b", "done", 1, 0.0)])
    assert project.runs_by_task() == Counter({"a": 2, "b": 1})
    assert project.runs_by_task("done") == Counter({"b": 1})
