"""SQLite broker specifics: file location, pragmas, processes sharing one file, fork safety."""

from __future__ import annotations

import multiprocessing as mp
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from celeriac.brokers.base import Publish
from celeriac.brokers.registry import broker_for_url
from celeriac.brokers.sqlite.broker import SQLiteBroker
from celeriac.brokers.sqlite.db import default_path, parse_url
from celeriac.brokers.sqlite.results import SQLiteResultStore
from celeriac.exceptions import ImproperlyConfigured
from celeriac.messages import Message, task_message

Q = "unit-q"
FORK = mp.get_context("fork")


def message(n: int) -> Message:
    return task_message("tests.add", f"task-{n}", (n,), {})


def pragma(broker: SQLiteBroker, name: str) -> object:
    return broker._db.get().execute(f"PRAGMA {name}").fetchone()[0]


def test_default_path_honours_env_then_cwd(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("CELERIAC_SQLITE_PATH", str(tmp_path / "env.sqlite3"))
    assert default_path() == str(tmp_path / "env.sqlite3")
    monkeypatch.delenv("CELERIAC_SQLITE_PATH")
    monkeypatch.chdir(tmp_path)
    assert default_path() == str(tmp_path / "celeriac.sqlite3")


def test_url_forms(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CELERIAC_SQLITE_PATH", str(tmp_path / "env.sqlite3"))
    assert parse_url("sqlite:///rel/dir/q.sqlite3") == ("rel/dir/q.sqlite3", {})
    assert parse_url("sqlite:////abs/q.sqlite3") == ("/abs/q.sqlite3", {})
    assert parse_url("sqlite://") == (str(tmp_path / "env.sqlite3"), {})
    assert parse_url("db+sqlite:///x.db?durability=fast") == ("x.db", {"durability": "fast"})
    with pytest.raises(ImproperlyConfigured):
        parse_url("sqlite:///:memory:")


def test_relative_path_is_relative_to_cwd(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    broker = broker_for_url("sqlite:///sub/q.sqlite3")
    assert isinstance(broker, SQLiteBroker)
    broker.publish(message(1), Q)
    broker.close()
    assert (tmp_path / "sub" / "q.sqlite3").exists()


def test_broker_and_result_store_share_the_default_file(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    monkeypatch.setenv("CELERIAC_SQLITE_PATH", str(path))
    broker, store = SQLiteBroker("sqlite://"), SQLiteResultStore("db+sqlite://")
    broker.publish(message(1), Q)
    store.set("t1", {"status": "SUCCESS", "result": 1})
    tables = {r[0] for r in sqlite3.connect(path).execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"messages", "dead_letters", "queues", "results", "chord_parts"} <= tables
    broker.close()
    store.close()


def test_pragmas_durable_by_default_fast_on_request(sqlite_path: str) -> None:
    durable = SQLiteBroker(f"sqlite:///{sqlite_path}")
    fast = SQLiteBroker(f"sqlite:///{sqlite_path}", options={"durability": "fast"})
    assert pragma(durable, "journal_mode") == "wal"
    assert pragma(durable, "synchronous") == 2  # FULL
    assert pragma(fast, "synchronous") == 1  # NORMAL
    assert pragma(durable, "busy_timeout") == 5000
    with pytest.raises(ImproperlyConfigured):
        SQLiteBroker(f"sqlite:///{sqlite_path}", options={"durability": "yolo"})
    durable.close()
    fast.close()


def test_publish_commits_with_full_sync_leases_and_acks_with_normal(sqlite_path: str) -> None:
    broker = SQLiteBroker(f"sqlite:///{sqlite_path}")
    broker.publish(message(1), Q)
    assert pragma(broker, "synchronous") == 2
    broker.ack(broker.receive([Q], owner="a", timeout=1))
    assert pragma(broker, "synchronous") == 1
    broker.publish(message(2), Q)
    assert pragma(broker, "synchronous") == 2
    broker.close()


def test_result_store_sync_is_normal_unless_durable(sqlite_path: str) -> None:
    def sync(store: SQLiteResultStore) -> object:
        return store._db.get().execute("PRAGMA synchronous").fetchone()[0]

    assert sync(SQLiteResultStore(f"sqlite:///{sqlite_path}")) == 1
    durable = SQLiteResultStore(f"sqlite:///{sqlite_path}", options={"durability": "durable"})
    assert sync(durable) == 2


def test_messages_and_leases_survive_a_new_instance(sqlite_path: str) -> None:
    first = SQLiteBroker(f"sqlite:///{sqlite_path}", lease_seconds=30)
    first.publish_many(Publish(message(n), Q) for n in range(3))
    [held] = first.receive([Q], owner="a", timeout=1)
    first.close()
    second = SQLiteBroker(f"sqlite:///{sqlite_path}", lease_seconds=30)
    assert len(second.receive([Q], owner="b", limit=10, timeout=0)) == 2
    assert second.expire_owner("a") == 1
    [again] = second.receive([Q], owner="b", timeout=1)
    assert (again.message.task_id, again.lost_count) == (held.message.task_id, 1)
    second.close()


def test_large_delayed_backlog_does_not_hide_ready_messages(sqlite_path: str) -> None:
    broker = SQLiteBroker(f"sqlite:///{sqlite_path}")
    future = time.time() + 3600
    broker.publish_many(Publish(message(n), Q, not_before=future) for n in range(2000))
    broker.publish(message(9999), Q)
    [d] = broker.receive([Q], owner="a", timeout=1)
    assert d.message.task_id == "task-9999"
    assert broker.stats(Q).delayed == 2000
    broker.close()


def test_idle_receive_does_not_spin(sqlite_path: str) -> None:
    broker = SQLiteBroker(f"sqlite:///{sqlite_path}")
    cpu = time.process_time()
    assert broker.receive([Q], owner="a", timeout=1.0) == []
    assert time.process_time() - cpu < 0.5
    broker.close()


def test_connections_of_finished_threads_are_closed(sqlite_path: str) -> None:
    broker = SQLiteBroker(f"sqlite:///{sqlite_path}")
    for n in range(10):
        thread = threading.Thread(target=broker.publish, args=(message(n), Q))
        thread.start()
        thread.join()
    broker.publish(message(99), Q)
    assert len(broker._db._open) <= 2
    assert broker.stats(Q).ready == 11
    broker.close()


def _drain_child(url: str, out: Any) -> None:
    broker = SQLiteBroker(url)
    got: list[str] = []
    while True:
        batch = broker.receive([Q], owner=f"p{os.getpid()}", limit=20, timeout=0.5)
        if not batch:
            break
        assert broker.ack(batch) == len(batch)
        got.extend(str(d.message.task_id) for d in batch)
    out.put(got)


def test_two_processes_drain_one_file_without_loss_or_duplicates(sqlite_path: str) -> None:
    url = f"sqlite:///{sqlite_path}"
    broker = SQLiteBroker(url)
    broker.publish_many(Publish(message(n), Q) for n in range(1500))
    out: Any = FORK.Queue()
    procs = [FORK.Process(target=_drain_child, args=(url, out)) for _ in range(2)]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    seen = [task_id for got in results for task_id in got]
    assert sorted(seen) == sorted(f"task-{n}" for n in range(1500))
    assert all(results)  # both processes took part
    assert broker.stats(Q).ready == 0
    broker.close()


def _use_inherited(broker: SQLiteBroker, parent_conn: sqlite3.Connection,
                   out: Any) -> None:
    reused = broker._db.get() is parent_conn
    broker.publish(message(2), Q)
    out.put((reused, [d.message.task_id for d in broker.receive([Q], owner="c", limit=5,
                                                                 timeout=1)]))


def test_forked_child_opens_its_own_connection(sqlite_path: str) -> None:
    broker = SQLiteBroker(f"sqlite:///{sqlite_path}")
    broker.publish(message(1), Q)
    parent_conn = broker._db.get()
    out: Any = FORK.Queue()
    child = FORK.Process(target=_use_inherited, args=(broker, parent_conn, out))
    child.start()
    reused, got = out.get(timeout=30)
    child.join(timeout=30)
    assert (reused, got, child.exitcode) == (False, ["task-1", "task-2"], 0)
    assert broker._db.get() is parent_conn
    broker.publish(message(3), Q)
    assert [d.message.task_id for d in broker.receive([Q], owner="p", timeout=1)] == ["task-3"]
    broker.close()


def _other_process_receives(url: str, queue: str, out: Any) -> None:
    out.put(len(SQLiteBroker(url, lease_seconds=1.0).receive([queue], owner="them",
                                                             timeout=0.2)))


def test_a_write_transaction_held_long_renews_this_process_leases(tmp_path: Path) -> None:
    """A task holding the GIL freezes any thread of its process that is inside a write
    transaction: every process, the lease renewer too, is locked out meanwhile. The
    transaction renews this process's leases before it commits, so the message is not
    taken by another worker for a lapse no one could prevent."""
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    broker = SQLiteBroker(url, lease_seconds=1.0)
    broker.publish(message(1), Q)
    [held] = broker.receive([Q], owner="me", timeout=1)
    store = SQLiteResultStore(url)  # any writer of this process on the file: here results
    with store._db.tx():
        time.sleep(1.5)  # the lock held past the lease, as while a task held the GIL
    out = FORK.Queue()
    other = FORK.Process(target=_other_process_receives, args=(url, Q, out))
    other.start()
    other.join(30)
    assert out.get(timeout=5) == 0  # still leased to this process
    assert broker.renew([held]) == [True]
    store.close()
    broker.close()


def test_settle_and_receive_commits_results_acks_and_lease_together(tmp_path: Path) -> None:
    """A worker's loop turn with the result store in the broker's file: one transaction
    (counted through sqlite3's trace of COMMITs), the REVOKED rule still applies."""
    from celeriac import states
    from celeriac.results.meta import build_meta

    url = f"sqlite:///{tmp_path / 'one.sqlite3'}"
    broker, store = SQLiteBroker(url), SQLiteResultStore(url)
    try:
        for n in range(4):
            broker.publish(message(n), Q)
        done_first = broker.receive([Q], owner="w", limit=2, timeout=1)
        store.set("task-9", build_meta("task-9", None, states.REVOKED))
        results = [(d.message.task_id, build_meta(d.message.task_id, 1, states.SUCCESS))
                   for d in done_first] + [("task-9", build_meta("task-9", 2, states.SUCCESS))]
        commits: list[str] = []
        broker._db.get().set_trace_callback(
            lambda sql: commits.append(sql) if sql.strip().upper() == "COMMIT" else None)
        written, acked, got = broker.settle_and_receive(store, results, None, done_first, [Q],
                                                        owner="w", limit=2)
        assert commits == ["COMMIT"]  # results, acks and the new lease in one transaction
        assert written == [True, True, False] and acked == 2
        assert sorted(d.message.task_id for d in got) == ["task-2", "task-3"]
        assert store.get("task-0")["result"] == 1  # type: ignore[index]
        assert store.get("task-9")["status"] == states.REVOKED  # type: ignore[index]
        assert broker.stats(Q).leased == 2
        other = SQLiteResultStore(f"sqlite:///{tmp_path / 'other.sqlite3'}")
        written, acked, _ = broker.settle_and_receive(other, results[:1], None, got[:1], [Q],
                                                      owner="w", limit=1)
        assert written == [True] and acked == 1  # another file: the interface's default
        assert other.get("task-0")["result"] == 1  # type: ignore[index]
        other.close()
    finally:
        broker.close()
        store.close()


def test_switching_to_wal_retries_a_lock_the_busy_handler_does_not_wait_for(
        tmp_path: Any) -> None:
    """Switching the journal mode (and reading a database another connection recovers)
    may answer "database is locked" at once; opening retries instead of failing."""
    from celeriac.brokers.sqlite import db

    real = sqlite3.connect(str(tmp_path / "wal.sqlite3"), isolation_level=None)

    class LockedTwice:
        failures = 2

        def execute(self, sql: str) -> Any:
            if "journal_mode" in sql and self.failures:
                self.failures -= 1
                raise sqlite3.OperationalError("database is locked")
            return real.execute(sql)

    flaky = LockedTwice()
    db._use_wal(flaky)  # type: ignore[arg-type]
    assert flaky.failures == 0
    assert real.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    class AlwaysLocked:
        def execute(self, sql: str) -> Any:
            raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        db._use_wal(AlwaysLocked(), patience=0.05)  # type: ignore[arg-type]
    real.close()
