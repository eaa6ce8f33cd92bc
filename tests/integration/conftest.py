"""Fixtures shared by the integration tests: ``raw``, a plain redis-py client on the test
database (a module that needs another kind of raw connection, e.g. an AMQP channel,
defines its own ``raw``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
