"""Transactional enqueue on PostgreSQL: ``apply_async(..., connection=conn)``.

The message is inserted through the caller's connection, inside its open
transaction: invisible to consumers until commit, gone on rollback, gone when the
producer is SIGKILLed between insert and commit. psycopg 3, Django's connection
wrapper (in a subprocess, so Django's global settings stay out of this process) and
SQLAlchemy's Connection and Session are accepted; anything else, another database,
or a broker that is not PostgreSQL is refused with a clear error.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery
from celeriac.exceptions import ImproperlyConfigured
from needs import need

psycopg = need("psycopg")

pytestmark = pytest.mark.postgres
BASE = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def app(postgres_url: str) -> Iterator[Celery]:
    made = Celery("enqueue", broker=postgres_url, backend=postgres_url)

    @made.task(name="enqueue.add")
    def add(x: int, y: int) -> int:
        return x + y

    yield made
    made.close()


def waiting(app: Celery) -> int:
    stats = app.broker.stats("celery")
    return stats.ready + stats.delayed + stats.leased


def received_ids(app: Celery, timeout: float = 0.5) -> list[str]:
    got = app.broker.receive(["celery"], owner="t", limit=10, timeout=timeout)
    app.broker.ack(got)
    return [str(d.message.task_id) for d in got]


def test_commit_makes_the_message_visible(app: Celery) -> None:
    add = app.tasks["enqueue.add"]
    with psycopg.connect(BASE) as conn:  # not autocommit: a transaction opens
        result = add.apply_async((2, 2), connection=conn)
        assert waiting(app) == 0, "visible before commit"
        assert received_ids(app, timeout=0.2) == []
        conn.commit()
    assert received_ids(app, timeout=5) == [result.id]


def test_rollback_leaves_nothing(app: Celery) -> None:
    add = app.tasks["enqueue.add"]
    with psycopg.connect(BASE) as conn:
        add.apply_async((1, 1), connection=conn)
        add.s(3, 3).apply_async(connection=conn)
        conn.rollback()
    assert waiting(app) == 0
    assert received_ids(app, timeout=0.3) == []


def test_group_and_chord_members_join_the_transaction(app: Celery) -> None:
    from celeriac import chord, group

    add = app.tasks["enqueue.add"]
    with psycopg.connect(BASE) as conn:
        group(add.s(i, i) for i in range(5)).apply_async(connection=conn)
        chord([add.s(1, 1), add.s(2, 2)], add.s(0)).apply_async(connection=conn)
        (add.s(1, 1) | add.s(2)).apply_async(connection=conn)
        assert waiting(app) == 0
        conn.rollback()
    assert waiting(app) == 0
    with psycopg.connect(BASE) as conn:
        group(add.s(i, i) for i in range(5)).apply_async(connection=conn)
        conn.commit()
    assert waiting(app) == 5


def test_commit_wakes_a_waiting_consumer(app: Celery) -> None:
    add = app.tasks["enqueue.add"]
    app.broker.receive(["celery"], owner="t", timeout=0)  # listener up and subscribed
    with psycopg.connect(BASE, autocommit=True) as conn, conn.transaction():
        task_id = add.apply_async((5, 5), connection=conn).id
    start = time.monotonic()
    assert received_ids(app, timeout=5) == [task_id]
    assert time.monotonic() - start < 2


def test_sqlalchemy_connection_and_session(app: Celery) -> None:
    sqlalchemy = need("sqlalchemy")
    from sqlalchemy.orm import Session

    add = app.tasks["enqueue.add"]
    engine = sqlalchemy.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    try:
        with engine.connect() as conn:
            first = add.apply_async((1, 2), connection=conn).id
            assert waiting(app) == 0
            conn.commit()
        with Session(engine) as session:
            add.apply_async((3, 4), connection=session)
            session.rollback()
        with Session(engine) as session, session.begin():
            second = add.apply_async((5, 6), connection=session).id
    finally:
        engine.dispose()
    assert sorted(received_ids(app, timeout=5)) == sorted([first, second])


DJANGO_SCRIPT = textwrap.dedent('''
    import sys
    import django
    from django.conf import settings
    settings.configure(DATABASES={"default": {
        "ENGINE": "django.db.backends.postgresql", "NAME": "test", "USER": "postgres",
        "HOST": "127.0.0.1", "PORT": 5432}}, USE_TZ=True)
    django.setup()
    from django.db import connection, transaction
    from celeriac import Celery

    app = Celery("dj", broker=sys.argv[1])

    @app.task(name="dj.add")
    def add(x, y):
        return x + y

    with transaction.atomic():
        kept = add.apply_async((1, 1), connection=connection).id
    try:
        with transaction.atomic():
            add.apply_async((2, 2), connection=connection)
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    print(kept)
''')


def test_django_connection_wrapper(app: Celery, tmp_path: Path) -> None:
    need("django")
    script = tmp_path / "dj.py"
    script.write_text(DJANGO_SCRIPT)
    done = subprocess.run([sys.executable, str(script), app.broker_url], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    kept = done.stdout.strip().splitlines()[-1]
    assert received_ids(app, timeout=5) == [kept]
    assert waiting(app) == 0


DJANGO_OUTBOX_SCRIPT = textwrap.dedent('''
    import sys
    import django
    from django.conf import settings
    settings.configure(DATABASES={"default": {
        "ENGINE": "django.db.backends.postgresql", "NAME": "test", "USER": "postgres",
        "HOST": "127.0.0.1", "PORT": 5432}}, USE_TZ=True)
    django.setup()
    from django.db import transaction
    from celeriac import Celery, hooks
    from celeriac.contrib.django import outbox

    app = Celery("djo", broker=sys.argv[1])
    app.conf.task_outbox = True
    hooks.register_publish_interceptor(outbox.intercept)

    @app.task(name="djo.add")
    def add(x, y):
        return x + y

    with transaction.atomic():
        kept = add.delay(1, 1).id
    try:
        with transaction.atomic():
            add.delay(2, 2)
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    print(kept)
''')


def test_django_outbox_joins_the_transaction_on_the_same_database(
        app: Celery, tmp_path: Path) -> None:
    """With ``task_outbox`` and the broker in Django's database, ``delay()`` inside
    ``atomic()`` goes into the queue table in that transaction (no outbox table: the
    script never migrates one, so writing a row would fail)."""
    need("django")
    script = tmp_path / "djo.py"
    script.write_text(DJANGO_OUTBOX_SCRIPT)
    done = subprocess.run([sys.executable, str(script), app.broker_url], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    kept = done.stdout.strip().splitlines()[-1]
    assert received_ids(app, timeout=5) == [kept]
    assert waiting(app) == 0


PRODUCER = textwrap.dedent('''
    import sys, time
    import psycopg
    from celeriac import Celery

    app = Celery("killed", broker=sys.argv[1])
    conn = psycopg.connect(sys.argv[2])
    app.send_task("killed.add", (1, 2), connection=conn)
    print("inserted", flush=True)
    time.sleep(120)
''')


def test_producer_killed_between_insert_and_commit(app: Celery, tmp_path: Path) -> None:
    name = f"celeriac-killed-{uuid.uuid4().hex[:8]}"
    script = tmp_path / "producer.py"
    script.write_text(PRODUCER)
    with subprocess.Popen([sys.executable, str(script), app.broker_url,
                           f"{BASE}?application_name={name}"], stdout=subprocess.PIPE,
                          text=True) as proc:  # closes its stdout pipe on the way out
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "inserted"
            with psycopg.connect(BASE, autocommit=True) as conn:
                [(state,)] = conn.execute("SELECT state FROM pg_stat_activity WHERE "
                                          "application_name = %s", (name,)).fetchall()
                assert state == "idle in transaction"
                assert waiting(app) == 0
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
                deadline = time.monotonic() + 10
                while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE "
                                   "application_name = %s", (name,)).fetchone()[0]:
                    assert time.monotonic() < deadline, "the killed producer's session lingers"
                    time.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert waiting(app) == 0
    assert received_ids(app, timeout=0.3) == []


def test_autocommit_connection_commits_at_once(app: Celery) -> None:
    with psycopg.connect(BASE, autocommit=True) as conn:
        task_id = app.tasks["enqueue.add"].apply_async((1, 1), connection=conn).id
    assert received_ids(app, timeout=5) == [task_id]


def test_refusals(app: Celery, tmp_path: Path, sqlite_path: str) -> None:
    add = app.tasks["enqueue.add"]
    with pytest.raises(ImproperlyConfigured, match="not a PostgreSQL connection"):
        add.apply_async((1, 1), connection=sqlite3.connect(":memory:"))
    with psycopg.connect(BASE) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        with pytest.raises(ImproperlyConfigured, match="aborted"):
            add.apply_async((1, 1), connection=conn)
    other = Celery("other", broker=f"sqlite:///{sqlite_path}")
    with psycopg.connect(BASE) as conn, pytest.raises(ImproperlyConfigured,
                                                      match="needs the PostgreSQL broker"):
        other.send_task("x", (1,), connection=conn)
    other.close()
    assert waiting(app) == 0


def test_connection_to_another_database_is_refused(app: Celery) -> None:
    name = f"celeriac_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(BASE, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}") as conn, \
                pytest.raises(ImproperlyConfigured, match=f"database '{name}'"):
            app.tasks["enqueue.add"].apply_async((1, 1), connection=conn)
    finally:
        with psycopg.connect(BASE, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    assert waiting(app) == 0


def test_unwrap_accepts_the_raw_connection_it_is_given() -> None:
    from celeriac.brokers.postgres.enqueue import unwrap

    marker: Any = object()
    assert unwrap(marker) is marker
