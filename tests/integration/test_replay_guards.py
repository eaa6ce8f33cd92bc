"""The replay guard on the real servers (issue 19, point 2): one claim per nonce, shared by
every worker of the broker, expiring after its time-to-live.

Redis: ``SET NX EX`` under the broker's ``global_keyprefix`` (the test's own prefix,
deleted afterwards). PostgreSQL: table ``celeriac_seen`` in the test's own schema
(dropped afterwards). Two guards on one URL stand for two worker processes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from celeriac.security.replay import PostgresGuard, RedisGuard, guard_for


def check_claims(make: Callable[[], Any]) -> None:
    first, second = make(), make()
    nonce = uuid.uuid4().hex
    assert first.claim(nonce, 60) is True
    assert second.claim(nonce, 60) is False  # the other worker sees it
    assert first.claim(nonce, 60) is False
    first.forget(nonce)
    assert second.claim(nonce, 60) is True
    short = uuid.uuid4().hex
    assert first.claim(short, 0.2) is True
    time.sleep(2.2)  # Redis EX is whole seconds (ttl + 1)
    assert second.claim(short, 60) is True


@pytest.mark.redis
def test_redis_guard(redis_url: str, key_prefix: str) -> None:
    options = {"global_keyprefix": key_prefix}
    assert isinstance(guard_for(redis_url, options), RedisGuard)
    check_claims(lambda: guard_for(redis_url, options))
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = client.keys(f"{key_prefix}_celeriac.seen.*")
        assert keys and all(0 < client.ttl(k) <= 61 for k in keys)
    finally:
        client.close()


@pytest.mark.postgres
def test_postgres_guard(postgres_url: str) -> None:
    guard = guard_for(postgres_url)
    assert isinstance(guard, PostgresGuard)
    check_claims(lambda: guard_for(postgres_url))
