"""A process forked while another thread holds an SQLite write transaction can still
write to the database (``worker -B`` on the embedded broker: a prefork child started
while the beat thread committed never received a task, "database is locked" for ever).
Real processes: ``multiprocessing`` with the fork start method, as the prefork pool."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest

from celeriac.brokers.sqlite.db import Connections, transaction

SCHEMA = "CREATE TABLE IF NOT EXISTS t (who TEXT)"


def _child_writes(path: str) -> None:
    db = Connections(path, schema=SCHEMA)
    with db.tx() as conn:
        conn.execute("INSERT INTO t VALUES ('child')")
    db.close()


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                    reason="needs the fork start method")
def test_fork_while_another_thread_is_writing(tmp_path: Path) -> None:
    path = str(tmp_path / "fork.sqlite3")
    db = Connections(path, schema=SCHEMA)
    db.get()
    inside, done = threading.Event(), threading.Event()

    def writer() -> None:
        with transaction(db.get(), path) as conn:
            inside.set()
            conn.execute("INSERT INTO t VALUES ('thread')")
            done.wait(0.5)  # still holding the write lock when the fork is asked for
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    assert inside.wait(5)
    child = multiprocessing.get_context("fork").Process(target=_child_writes, args=(path,))
    child.start()
    child.join(30)
    thread.join(5)
    assert child.exitcode == 0
    rows = [r[0] for r in db.get().execute("SELECT who FROM t ORDER BY rowid")]
    # the fork waited for the thread's commit: its row comes first
    assert rows == ["thread", "child"]
    db.close()
