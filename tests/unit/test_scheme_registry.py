"""The URL scheme table (celeriac.brokers.registry): which engine serves which URL, and how."""

from __future__ import annotations

import pytest

from celeriac.brokers.memory.broker import MemoryBroker
from celeriac.brokers.memory.results import MemoryResultStore
from celeriac.brokers.redis.broker import RedisBroker
from celeriac.brokers.redis.results import RedisResultStore
from celeriac.brokers.registry import (
    BEAT,
    BROKER,
    RESULTS,
    SCHEMES,
    broker_class,
    is_embedded,
    serves,
    store_for_url,
)
from celeriac.brokers.sqlite.broker import SQLiteBroker
from celeriac.exceptions import ImproperlyConfigured


@pytest.mark.parametrize(("url", "cls"), [
    ("memory://", MemoryBroker),
    ("sqlite:///tmp/x.sqlite3", SQLiteBroker),
    ("redis://localhost:6379/0", RedisBroker),
    ("rediss://localhost:6380/0", RedisBroker),
    ("sentinel://localhost:26379", RedisBroker),
    ("redis+socket:///tmp/redis.sock", RedisBroker),
    ("unix:///tmp/redis.sock", RedisBroker),
])
def test_broker_schemes(url: str, cls: type) -> None:
    assert broker_class(url) is cls


def test_result_store_schemes(tmp_path: object) -> None:
    assert isinstance(store_for_url("cache+memory://"), MemoryResultStore)
    assert type(store_for_url("redis://localhost:6379/0")) is RedisResultStore
    assert store_for_url(f"db+sqlite:///{tmp_path}/r.sqlite3").url.startswith("db+sqlite")


def test_a_scheme_names_only_its_roles() -> None:
    assert serves("cache+memory://", RESULTS) and not serves("cache+memory://", BROKER)
    assert serves("db+sqlite:///x", BEAT) and not serves("db+sqlite:///x", BROKER)
    with pytest.raises(ImproperlyConfigured, match=r"broker_url: unsupported scheme 'cache'"):
        broker_class("cache+memory://")


def test_unknown_scheme_names_the_setting_and_the_known_ones() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"broker_url: .*'nats'.*known: .*memory"):
        broker_class("nats://localhost")
    with pytest.raises(ImproperlyConfigured, match=r"result_backend: .*known: cache\+memory"):
        store_for_url("mongodb://localhost")


def test_embedded_engines_keep_results_with_the_broker() -> None:
    assert is_embedded("sqlite://") and is_embedded("memory://")
    assert not is_embedded("redis://localhost") and not is_embedded("nats://x")


def test_every_row_loads_its_engine() -> None:
    for name, row in SCHEMES.items():
        engine = row.load()
        for role, part in ((BROKER, engine.broker), (RESULTS, engine.result_store),
                           (BEAT, engine.beat_store)):
            if role in row.roles:
                assert part is not None, (name, role)
