"""Huey on Redis (``RedisHuey``: blocking dequeue, results in a Redis hash).

``BENCH_HUEY_NOTIFY=1`` turns on ``notify_result`` (the consumer LPUSHes a
token per result and ``get(blocking=True)`` BLPOPs it instead of polling with
back-off from 50 ms).
"""

from __future__ import annotations

import os
from typing import Any

from huey import RedisHuey

from peerapps import PREFIX, URL, bump
from peerapps.client import SyncClient

NAME = "peers" + "".join(ch for ch in PREFIX if ch.isalnum())
huey = RedisHuey(name=NAME, url=URL, notify_result=os.environ.get("BENCH_HUEY_NOTIFY") == "1")


@huey.task()
def incr(key: str) -> int:
    return bump(key)


class Client(SyncClient):
    def send(self, key: str) -> Any:
        return incr(key)

    def wait(self, handle: Any, timeout: float) -> Any:
        return handle.get(blocking=True, timeout=timeout)
