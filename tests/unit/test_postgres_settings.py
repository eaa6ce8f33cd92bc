"""PostgreSQL URL options, statement loading and registration (no server needed)."""

from __future__ import annotations

import os

import pytest

from celeriac.exceptions import ImproperlyConfigured
from needs import need

if not os.environ.get("CI"):
    need("psycopg")

from celeriac.brokers.postgres import sql
from celeriac.brokers.postgres.db import parse_url


@pytest.mark.parametrize("url", [
    "postgresql://u:p@h:5433/db", "postgres://u:p@h:5433/db", "db+postgresql://u:p@h:5433/db",
    "db+postgres://u:p@h:5433/db", "postgresql+psycopg2://u:p@h:5433/db",
    "db+postgresql+psycopg://u:p@h:5433/db"])
def test_every_spelling_reaches_the_same_server(url: str) -> None:
    settings = parse_url(url)
    assert settings.conninfo == "postgresql://u:p@h:5433/db?application_name=celeriac"
    assert settings.schema == "celeriac" and settings.auto_migrate


def test_celeriac_options_leave_the_libpq_query() -> None:
    settings = parse_url("postgresql://h/db?schema=app_1&sslmode=require&pool_size=3"
                         "&auto_migrate=false&polling_interval=2&application_name=web",
                         {"vacuum": "off"})
    assert settings.conninfo == "postgresql://h/db?sslmode=require&application_name=web"
    assert (settings.schema, settings.pool_size, settings.auto_migrate,
            settings.polling_interval, settings.vacuum) == ("app_1", 3, False, 2.0, "off")


def test_transport_options_win_and_unknown_ones_are_reported(
        caplog: pytest.LogCaptureFixture) -> None:
    settings = parse_url("postgresql://h/db?schema=a", {"schema": "b",
                                                        "visibility_timeout": 3600,
                                                        "retry_policy": {}})
    assert settings.schema == "b"
    assert "visibility_timeout" in caplog.text and "retry_policy" not in caplog.text


@pytest.mark.parametrize("url, match", [
    ("postgresql://h/db?schema=Bad-Name", "schema"),
    ("postgresql://h/db?vacuum=sometimes", "vacuum"),
    ("postgresql://h/db?pool_size=many", "bad option"),
    ("mysql://h/db", "not a postgresql"),
    ("db+://h/db", "not a postgresql"),
])
def test_bad_urls_are_refused(url: str, match: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=match):
        parse_url(url)


def test_password_is_masked() -> None:
    assert parse_url("postgresql://u:secret@h/db").safe_url.startswith("postgresql://u:***@h/db")


def test_every_statement_is_named_described_and_schema_qualified() -> None:
    text = (sql.resources.files(sql.__package__) / "queries.sql").read_text()
    header = text.split("-- name:", 1)[0]
    statements = sql.statements("s1")
    assert len(statements) > 40
    for name, body in statements.items():
        prefix = name.split("_")[0]
        assert name in header or prefix in header, f"{name} is not described"
        assert ("{schema}" not in body and "s1." in body) or name == "table_health", name
        assert "%" not in body.replace("%(", ""), f"{name}: a bare % breaks parameters"


def test_channel_names_are_short_and_distinct() -> None:
    names = {sql.channel(s, k, n) for s in ("a", "b") for k in ("q", "r") for n in ("x", "y")}
    assert len(names) == 8 and all(len(n) < 64 for n in names)


def test_migrations_are_numbered_from_one() -> None:
    versions = [v for v, _, _ in sql.migrations()]
    assert versions == list(range(1, len(versions) + 1)) and sql.latest_version() == versions[-1]


def test_schemes_are_registered() -> None:
    from celeriac.brokers.postgres.beat_store import store_for_url as beat_store
    from celeriac.brokers.postgres.results import PostgresResultStore
    from celeriac.brokers.registry import BEAT, BROKER, RESULTS, broker_class, engine_for, serves

    assert broker_class("postgres://h/db").__name__ == "PostgresBroker"
    assert broker_class("postgresql://h/db").__name__ == "PostgresBroker"
    assert broker_class("postgresql+psycopg://h/db").__name__ == "PostgresBroker"
    for scheme in ("postgresql", "postgres", "db+postgresql", "db+postgres",
                   "db+postgresql+psycopg", "db+postgresql+psycopg2"):
        assert engine_for(f"{scheme}://h/db", RESULTS).result_store is PostgresResultStore
        assert engine_for(f"{scheme}://h/db", BEAT).beat_store is beat_store
    for scheme in ("db+postgresql", "db+postgres", "db+postgresql+psycopg2"):
        assert not serves(f"{scheme}://h/db", BROKER)  # Celery's result-backend spelling only
    assert engine_for("postgresql://h/db", BROKER).admin is not None


def test_other_brokers_refuse_transactional_enqueue() -> None:
    from celeriac.brokers.memory.broker import MemoryBroker

    with pytest.raises(ImproperlyConfigured, match="needs the PostgreSQL broker"):
        MemoryBroker("memory://").publish_in_transaction(object(), [])


@pytest.mark.parametrize(("settings", "shared"), [
    ({"ENGINE": "django.db.backends.postgresql", "NAME": "appdb", "HOST": "db.internal",
      "PORT": "5432"}, True),
    ({"ENGINE": "django.db.backends.postgresql", "NAME": "appdb", "HOST": "db.internal",
      "PORT": ""}, True),
    ({"ENGINE": "django.contrib.gis.db.backends.postgis", "NAME": "appdb",
      "HOST": "db.internal", "PORT": 5432}, True),
    ({"ENGINE": "django.db.backends.postgresql", "NAME": "other", "HOST": "db.internal"},
     False),
    ({"ENGINE": "django.db.backends.postgresql", "NAME": "appdb", "HOST": "db2.internal"},
     False),
    ({"ENGINE": "django.db.backends.postgresql", "NAME": "appdb", "HOST": "db.internal",
      "PORT": "5433"}, False),
    ({"ENGINE": "django.db.backends.sqlite3", "NAME": "appdb"}, False),
])
def test_shares_database_compares_engine_name_host_and_port(settings: dict[str, object],
                                                            shared: bool) -> None:
    from celeriac.brokers.postgres.enqueue import shares_database

    conninfo = parse_url("postgresql://app:pw@db.internal:5432/appdb?schema=s").conninfo
    assert shares_database(conninfo, settings) is shared


def test_local_host_names_are_one_host() -> None:
    from celeriac.brokers.postgres.enqueue import shares_database

    conninfo = parse_url("postgresql://postgres@127.0.0.1/test").conninfo
    for host in ("", "localhost", "/var/run/postgresql"):
        assert shares_database(conninfo, {"ENGINE": "django.db.backends.postgresql",
                                          "NAME": "test", "HOST": host})
