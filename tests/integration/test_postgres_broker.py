"""PostgreSQL specifics beyond the broker contract: plans without statistics, schema
versions, idle waiting without queries, table upkeep, result store URL forms."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from celeriac.brokers.base import Publish
from celeriac.brokers.postgres import sql
from celeriac.messages import task_message
from needs import need

LATEST = sql.latest_version()

psycopg = need("psycopg")

pytestmark = pytest.mark.postgres
BASE = "postgresql://postgres@127.0.0.1:5432/test"


def message(n: int) -> Any:
    return task_message("t.add", f"task-{n}", (n,), {}, queue="q")


def plan(conn: Any, text: str, params: dict[str, Any]) -> str:
    rows = conn.execute(f"EXPLAIN (FORMAT JSON) {text}", params).fetchall()
    return json.dumps(rows[0][0])


def test_fetch_uses_the_partial_indexes_on_a_never_analysed_table(postgres_url: str,
                                                                  pg_schema: str) -> None:
    from celeriac.brokers.postgres.broker import PostgresBroker

    broker = PostgresBroker(postgres_url)
    try:
        now = time.time()
        broker.publish_many(Publish(message(n), "q", priority=n % 10,
                                    not_before=now + 3600 if n % 3 == 0 else None)
                            for n in range(30_000))
        leased = broker.receive(["q"], owner="w", limit=500, timeout=1)
        assert len(leased) == 500
        sql = broker.db.sql
        with psycopg.connect(BASE, autocommit=True) as conn:
            [(tuples,)] = conn.execute(
                "SELECT reltuples FROM pg_class WHERE oid = %s::regclass",
                (f"{pg_schema}.messages",)).fetchall()
            assert tuples == -1, "the table must never have been analysed"
            params = {"ack_ids": [], "ack_tokens": [], "queues": ["q", "other"], "limit": 10,
                      "owner": "w", "lease_seconds": 30.0}
            for mode in ("auto", "force_generic_plan"):  # the pool's sessions use generic
                conn.execute(f"SET plan_cache_mode = {mode}")
                text = plan(conn, sql["ack_and_lease"], params)
                assert "messages_ready" in text, text
                assert "messages_delayed" in text and "messages_leased" in text, text
                assert '"Seq Scan"' not in text, (mode, text)
            due = plan(conn, sql["next_due"], {"queues": ["q"]})
            assert '"Seq Scan"' not in due and "messages_delayed" in due, due
    finally:
        broker.purge("q")
        broker.close()


def test_idle_receive_does_not_query_until_notified(postgres_url: str) -> None:
    from celeriac.brokers.postgres.broker import PostgresBroker

    broker = PostgresBroker(postgres_url, options={"polling_interval": 60})
    calls: list[int] = []
    original = broker._lease
    broker._lease = lambda *a, **k: (calls.append(1), original(*a, **k))[1]  # type: ignore
    try:
        for _ in range(10):
            assert broker.receive(["idle"], owner="w", timeout=0.05) == []
        assert len(calls) == 1, "an idle consumer must wait, not poll"
        other = PostgresBroker(postgres_url)
        other.publish(message(1), "idle")
        other.close()
        [got] = broker.receive(["idle"], owner="w", timeout=5)
        assert got.message.task_id == "task-1" and len(calls) == 2
    finally:
        broker.close()


def test_vacuum_keeps_the_queue_table_bounded() -> None:
    """VACUUM reclaims only rows no transaction may still see; on the shared server other
    sessions (other test processes) would hold that horizon back, but only inside their
    own database: the test runs in a database of its own, dropped afterwards."""
    import uuid

    from celeriac.brokers.postgres.broker import PostgresBroker

    name = f"celeriac_vacuum_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(BASE, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = BASE.rsplit("/", 1)[0] + f"/{name}"
    broker = PostgresBroker(url)
    peaks = []  # the table's size after each round, before its VACUUM
    try:
        for _ in range(3):
            broker.publish_many(Publish(message(n), "v") for n in range(5000))
            while broker.ack(broker.receive(["v"], owner="w", limit=500, timeout=0)):
                pass
            with psycopg.connect(url, autocommit=True) as conn:
                peaks.append(conn.execute(
                    "SELECT pg_relation_size('celeriac.messages')").fetchone()[0])
                assert "messages" in broker.db.maintenance.run_once(force=True)
    finally:
        broker.close()
        with psycopg.connect(BASE, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    # VACUUM makes deleted rows' space reusable (or truncates the table). Without it the
    # table would take three times the first round's size by the third; with it, it takes
    # at most twice (whether a bulk insert finds the freed pages at once, or extends the
    # table first and reuses them in the next round, varies from run to run)
    assert max(peaks) <= peaks[0] * 2.2, peaks


PROJECT = textwrap.dedent('''
    from celeriac import Celery
    app = Celery("proj", broker={url!r})

    @app.task
    def add(x, y):
        return x + y
''')


def cli(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "proj.py").write_text(PROJECT.format(url=url))
    return subprocess.run([sys.executable, "-m", "celeriac", "-A", "proj", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=False)


def test_db_migrate_creates_then_reports_the_version(tmp_path: Path, pg_schema: str) -> None:
    url = f"{BASE}?schema={pg_schema}&auto_migrate=false"
    refused = cli(tmp_path, url, "worker", "-P", "solo")
    assert refused.returncode == 1
    assert "db migrate" in refused.stderr and pg_schema in refused.stderr
    first = cli(tmp_path, url, "db", "migrate")
    assert first.returncode == 0, first.stderr
    assert "applied 0001_initial, 0002_meta_status, 0003_rate_buckets, 0004_slots" in first.stdout
    again = cli(tmp_path, url, "db", "migrate")
    assert f"already at version {LATEST}" in again.stdout
    status = cli(tmp_path, url, "db", "status")
    assert f"version {LATEST} (this celeriac needs {LATEST})" in status.stdout
    assert "messages: 0 live rows" in status.stdout


def test_db_commands_act_once_per_schema(tmp_path: Path, postgres_url: str,
                                        pg_schema: str) -> None:
    """Broker and result store in one schema are migrated and vacuumed once; an app
    without a PostgreSQL URL has nothing to migrate."""
    backend = postgres_url.replace("postgresql://", "db+postgresql://", 1)
    (tmp_path / "proj.py").write_text(textwrap.dedent(f'''
        from celeriac import Celery
        app = Celery("proj", broker={postgres_url!r}, backend={backend!r})
    '''))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "celeriac", "-A", "proj", *args],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60,
                              check=False)

    migrated = run("db", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.count("applied 0001_initial") == 1
    assert f"schema {pg_schema!r} (broker)" in migrated.stdout
    assert "(result_backend)" not in migrated.stdout
    vacuumed = run("db", "vacuum")
    assert vacuumed.returncode == 0, vacuumed.stderr
    assert vacuumed.stdout.count("vacuumed messages") == 1
    (tmp_path / "proj.py").write_text(textwrap.dedent(f'''
        from celeriac import Celery
        app = Celery("proj", broker="sqlite:///{tmp_path}/db.sqlite3")
    '''))
    assert run("db", "migrate").stdout.startswith("Nothing to migrate")


def test_worker_refuses_a_newer_or_older_schema(tmp_path: Path, postgres_url: str,
                                                pg_schema: str) -> None:
    assert cli(tmp_path, postgres_url, "db", "migrate").returncode == 0
    with psycopg.connect(BASE, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {pg_schema}.schema_version (version, name, "
                     "celeriac_version) VALUES (99, 'future', '9.9')")
    newer = cli(tmp_path, postgres_url, "worker", "-P", "solo")
    assert newer.returncode == 1
    assert f"version 99, newer than this celeriac knows ({LATEST})" in newer.stderr
    downgrade = cli(tmp_path, postgres_url, "db", "migrate")
    assert downgrade.returncode == 1 and "newer than this celeriac" in downgrade.stderr
    with psycopg.connect(BASE, autocommit=True) as conn:
        conn.execute(f"DELETE FROM {pg_schema}.schema_version")
        conn.execute(f"INSERT INTO {pg_schema}.schema_version (version, name, "
                     "celeriac_version) VALUES (0, 'ancient', '0.0')")
    older = cli(tmp_path, postgres_url, "worker", "-P", "solo")
    assert older.returncode == 1 and "run `celeriac -A <app> db migrate`" in older.stderr


def test_schema_is_created_on_first_use_by_default(postgres_url: str, pg_schema: str) -> None:
    from celeriac.brokers.postgres.broker import PostgresBroker

    broker = PostgresBroker(postgres_url)
    try:
        broker.publish(message(1), "first")
        assert broker.stats("first").ready == 1
    finally:
        broker.close()
    with psycopg.connect(BASE, autocommit=True) as conn:
        [(version,)] = conn.execute(f"SELECT max(version) FROM {pg_schema}.schema_version")
        assert version == LATEST


def test_a_version_1_schema_is_refused_then_upgraded(tmp_path: Path, postgres_url: str,
                                                   pg_schema: str) -> None:
    """Schema versions 2 (the REVOKED rule's meta_status) and 3 (rate-limit buckets) on
    top of a version-1 schema: workers refuse it until ``db migrate`` applies 0002 and
    0003; its data stays."""
    from celeriac.brokers.postgres import sql
    from celeriac.brokers.postgres.broker import PostgresBroker

    [(_, name, text)] = [m for m in sql.migrations() if m[0] == 1]
    with psycopg.connect(BASE, autocommit=True) as conn, conn.transaction():
        conn.execute(f"CREATE SCHEMA {pg_schema}")
        conn.execute(f"CREATE TABLE {pg_schema}.schema_version (version integer PRIMARY KEY, "
                     "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), "
                     "celeriac_version text NOT NULL)")
        conn.execute(text.replace("{schema}", pg_schema).encode())
        conn.execute(f"INSERT INTO {pg_schema}.schema_version (version, name, celeriac_version)"
                     " VALUES (1, %s, 'old')", (name,))
        conn.execute(f"INSERT INTO {pg_schema}.queues (name) VALUES ('kept')")
    refused = cli(tmp_path, postgres_url, "worker", "-P", "solo")
    assert refused.returncode == 1 and "at celeriac schema version 1" in refused.stderr
    upgraded = cli(tmp_path, postgres_url, "db", "migrate")
    assert f"applied 0002_meta_status, 0003_rate_buckets, 0004_slots; now at version {LATEST}" in \
        upgraded.stdout, upgraded.stderr
    broker = PostgresBroker(postgres_url)
    try:
        assert "kept" in broker.queues()
    finally:
        broker.close()


def test_channel_names_agree_between_python_and_sql(postgres_url: str, pg_schema: str) -> None:
    from celeriac.brokers.postgres.broker import PostgresBroker
    from celeriac.brokers.postgres.sql import channel

    broker = PostgresBroker(postgres_url)
    try:
        broker.stats("x")
        with psycopg.connect(BASE, autocommit=True) as conn:
            for kind, name in (("q", "celery"), ("r", "celery-task-meta-" + "a" * 36)):
                [(theirs,)] = conn.execute(f"SELECT {pg_schema}.channel(%s, %s)",
                                           (kind, name)).fetchall()
                assert theirs == channel(pg_schema, kind, name)
                assert len(theirs) < 64
    finally:
        broker.close()


@pytest.mark.parametrize("scheme", ["db+postgresql", "db+postgres", "postgres",
                                    "db+postgresql+psycopg2"])
def test_result_store_url_forms(scheme: str, pg_schema: str) -> None:
    from celeriac.brokers.postgres.results import PostgresResultStore
    from celeriac.brokers.registry import store_for_url

    url = f"{scheme}://postgres@127.0.0.1:5432/test?schema={pg_schema}"
    store = store_for_url(url, expires=0.5)
    try:
        assert isinstance(store, PostgresResultStore)
        store.set("t1", {"status": "SUCCESS", "result": 1, "task_id": "t1"})
        assert store.get("t1")["result"] == 1  # type: ignore[index]
        time.sleep(0.6)
        assert store.get("t1") is None, "expired results are invisible at once"
        assert store.cleanup() == 1
    finally:
        store.close()


def test_result_wait_is_woken_by_notify(postgres_url: str) -> None:
    import threading

    from celeriac.brokers.postgres.results import PostgresResultStore

    store = PostgresResultStore(postgres_url)
    writer = PostgresResultStore(postgres_url)
    try:
        timer = threading.Timer(0.3, lambda: writer.set(
            "w1", {"status": "SUCCESS", "result": 7, "task_id": "w1"}))
        start = time.monotonic()
        timer.start()
        meta = store.wait("w1", timeout=5)
        assert meta is not None and meta["result"] == 7
        assert time.monotonic() - start < 1.5
    finally:
        store.close()
        writer.close()
