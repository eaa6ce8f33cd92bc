"""The Redis schedule store: the store contract, and three schedulers sharing one Redis.

The contract tests and the cluster and failover simulations are the unit suite's, loaded
from ``tests/unit`` and run here with a Redis ``store`` (unique key prefix,
keys deleted afterwards).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from celeriac.brokers.redis.beat_store import RedisStore
from celeriac.schedules.store import ScheduleStore

pytestmark = pytest.mark.redis
UNIT = Path(__file__).resolve().parents[1] / "unit"


def _load(name: str) -> ModuleType:
    module_name = f"_beat_redis_{name}"
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

# Re-export the contract tests so pytest collects them here with the Redis fixture.
globals().update({name: getattr(_contract, name) for name in dir(_contract)
                  if name.startswith("test_")})


@pytest.fixture
def store(redis_url: str, key_prefix: str) -> Iterator[ScheduleStore]:
    made = RedisStore(redis_url, prefix=key_prefix)
    yield made
    made.close()


def test_three_schedulers_share_redis(redis_url: str, key_prefix: str) -> None:
    result = _cluster.run_cluster(lambda: RedisStore(redis_url, prefix=key_prefix), minutes=6)
    _cluster.check_exactly_once(result)
    assert [n.state for n in result["nodes"]].count("dead") == 1


def test_leader_dies_a_standby_takes_over_on_redis(redis_url: str, key_prefix: str) -> None:
    stores: list[RedisStore] = []

    def factory() -> RedisStore:
        stores.append(RedisStore(redis_url, prefix=key_prefix))
        return stores[-1]

    _failover.check_failover(_failover.simulate_failover(factory))
    for made in stores:
        made.close()


def test_store_for_app_uses_the_redis_broker(redis_url: str, key_prefix: str) -> None:
    from celeriac.schedules.stores import store_for_app

    class App:
        class conf(dict):
            pass

    app: Any = App()
    app.conf = App.conf(broker_url=redis_url, beat_redis_key_prefix=key_prefix)
    made = store_for_app(app)
    assert isinstance(made, RedisStore) and made.prefix == key_prefix
