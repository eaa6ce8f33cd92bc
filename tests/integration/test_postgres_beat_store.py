"""The PostgreSQL schedule store: the store contract, and three schedulers sharing one database.

The contract tests and the cluster and failover simulations are the unit suite's, loaded from
``tests/unit`` and run here with a PostgreSQL ``store`` (a schema of its own per test,
dropped afterwards).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from celeriac.schedules.store import ScheduleStore

pytestmark = pytest.mark.postgres
UNIT = Path(__file__).resolve().parents[1] / "unit"


def _load(name: str) -> ModuleType:
    module_name = f"_beat_pg_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, UNIT / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


_contract = _load("test_beat_store_contract")
_cluster = _load("test_beat_cluster")
_failover = _load("test_beat_failover")

globals().update({name: getattr(_contract, name) for name in dir(_contract)
                  if name.startswith("test_")})


@pytest.fixture
def store(postgres_url: str) -> Iterator[ScheduleStore]:
    from celeriac.brokers.postgres.beat_store import PostgresStore

    made = PostgresStore(postgres_url)
    yield made
    made.close()


def test_three_schedulers_share_postgres(postgres_url: str) -> None:
    from celeriac.brokers.postgres.beat_store import PostgresStore

    result = _cluster.run_cluster(lambda: PostgresStore(postgres_url), minutes=6)
    _cluster.check_exactly_once(result)
    assert [n.state for n in result["nodes"]].count("dead") == 1


def test_store_for_app_uses_the_postgres_broker(postgres_url: str, pg_schema: str) -> None:
    from celeriac.brokers.postgres.beat_store import PostgresStore
    from celeriac.schedules.stores import store_for_app

    class App:
        class conf(dict):
            pass

    app: Any = App()
    app.conf = App.conf(broker_url=postgres_url)
    made = store_for_app(app)
    try:
        assert isinstance(made, PostgresStore) and made.settings.schema == pg_schema
    finally:
        made.close()


def test_leader_dies_a_standby_takes_over_on_postgres(postgres_url: str) -> None:
    from celeriac.brokers.postgres.beat_store import PostgresStore

    stores: list[PostgresStore] = []

    def factory() -> PostgresStore:
        stores.append(PostgresStore(postgres_url))
        return stores[-1]

    _failover.check_failover(_failover.simulate_failover(factory))
    for made in stores:
        made.close()
