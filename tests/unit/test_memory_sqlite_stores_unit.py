"""Memory and SQLite broker/result-store specifics beyond the contract suites:
scheme registry, instance isolation, expiry cleanup and chord housekeeping."""

from __future__ import annotations

import sqlite3
import time

import pytest

from celeriac.brokers.memory.broker import MemoryBroker
from celeriac.brokers.memory.results import MemoryResultStore
from celeriac.brokers.registry import broker_for_url, store_for_url
from celeriac.brokers.sqlite.broker import SQLiteBroker
from celeriac.brokers.sqlite.results import SQLiteResultStore
from celeriac.messages import task_message

META = {"status": "SUCCESS", "result": 1}


def test_schemes_resolve_to_our_classes(sqlite_path: str) -> None:
    assert type(broker_for_url("memory://")) is MemoryBroker
    assert type(broker_for_url(f"sqlite:///{sqlite_path}")) is SQLiteBroker
    assert type(store_for_url("memory://")) is MemoryResultStore
    assert type(store_for_url("cache+memory://")) is MemoryResultStore
    assert type(store_for_url(f"sqlite:///{sqlite_path}")) is SQLiteResultStore
    assert type(store_for_url(f"db+sqlite:///{sqlite_path}")) is SQLiteResultStore


def test_memory_brokers_do_not_share_state() -> None:
    one, two = MemoryBroker(), MemoryBroker()
    one.publish(task_message("t", "id-1"), "q")
    assert two.receive(["q"], owner="w", timeout=0) == []
    assert two.queues() == []
    assert [d.message.task_id for d in one.receive(["q"], owner="w", timeout=0)] == ["id-1"]


def test_capabilities() -> None:
    assert MemoryBroker.capabilities.push_wakeup and not MemoryBroker.capabilities.multi_host
    assert SQLiteBroker.capabilities.native_delay and not SQLiteBroker.capabilities.multi_host


@pytest.mark.parametrize("expires", [None, 0])
def test_memory_store_none_or_zero_expiry_never_expires(expires: float | None) -> None:
    store = MemoryResultStore(expires=expires)
    store.set("a", META)
    assert store.cleanup() == 0
    assert store.get("a") == META


def test_memory_store_cleanup_removes_expired() -> None:
    store = MemoryResultStore()
    store.set("a", META, expires=0.05)
    store.set("b", META)
    time.sleep(0.1)
    assert store.get("a") is None
    assert store.cleanup() == 1
    assert store.get("b") == META


def test_sqlite_store_cleanup_deletes_expired_rows(sqlite_path: str) -> None:
    store = SQLiteResultStore(f"sqlite:///{sqlite_path}", expires=0.05)
    store.set("a", META)
    store.set("b", META, expires=None)
    store.chord_add("g", 0, META, 2)
    time.sleep(0.1)
    assert store.get("a") is None
    assert store.cleanup() == 3  # result a, one chord part, the chord counter
    rows = sqlite3.connect(sqlite_path).execute("SELECT key FROM results").fetchall()
    assert rows == [("celery-task-meta-b",)]
    store.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_chord_add_rejects_index_outside_the_header(kind: str, sqlite_path: str) -> None:
    store = MemoryResultStore() if kind == "memory" else SQLiteResultStore(
        f"sqlite:///{sqlite_path}")
    with pytest.raises(ValueError):
        store.chord_add("g", 3, META, 3)
    with pytest.raises(ValueError):
        store.chord_add("g", -1, META, 3)
    store.close()


def test_sqlite_store_get_many_spans_chunks(sqlite_path: str) -> None:
    store = SQLiteResultStore(f"sqlite:///{sqlite_path}")
    for n in range(1200):
        store.set(f"id-{n}", {"status": "SUCCESS", "result": n})
    found = store.get_many(f"id-{n}" for n in range(0, 1300))
    assert len(found) == 1200
    assert found["id-1100"]["result"] == 1100
    store.close()
