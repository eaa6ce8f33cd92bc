"""Dramatiq on Redis, with its Redis results backend (needed for the round trip).

Keys live under ``<BENCH_PREFIX>dramatiq`` (the broker's and the results' ``namespace``). The
queue prefetch per worker process comes from Dramatiq's own
``dramatiq_queue_prefetch`` environment variable, set by the harness.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

from peerapps import PREFIX, URL, bump
from peerapps.client import SyncClient

NAMESPACE = f"{PREFIX}dramatiq"
broker = RedisBroker(url=URL, namespace=NAMESPACE)
# readable result keys under the prefix (by default they are bare md5 digests, which no
# prefix pattern can find to clean up)
results = RedisBackend(url=URL, namespace=f"{NAMESPACE}-results", use_namespace_prefix_keys=True)
broker.add_middleware(Results(backend=results))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True)
def incr(key: str) -> int:
    return bump(key)


class Client(SyncClient):
    def send(self, key: str) -> Any:
        return incr.send(key)

    def wait(self, handle: Any, timeout: float) -> Any:
        return handle.get_result(block=True, timeout=int(timeout * 1000))

    def close(self) -> None:
        broker.close()
