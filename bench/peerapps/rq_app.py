"""RQ on Redis: ``incr`` is a plain function, enqueued by its import path.

Results are RQ's result streams; ``Job.latest_result(timeout=...)`` blocks on
them with ``XREAD``. RQ's keys have a fixed ``rq:`` prefix: the harness runs
it on its own Redis database and holds a lock so no other run shares it.
"""

from __future__ import annotations

import math
from typing import Any

from redis import Redis
from rq import Queue
from rq.results import Result

from peerapps import PREFIX, URL, bump
from peerapps.client import SyncClient

QUEUE = f"{PREFIX}rq"


def incr(key: str) -> int:
    return bump(key)


class Client(SyncClient):
    def __init__(self) -> None:
        self.connection = Redis.from_url(URL)
        self.queue = Queue(QUEUE, connection=self.connection)

    def send(self, key: str) -> Any:
        return self.queue.enqueue(incr, key)

    def wait(self, handle: Any, timeout: float) -> Any:
        result = handle.latest_result(timeout=math.ceil(timeout))
        if result is None or result.type != Result.Type.SUCCESSFUL:
            raise RuntimeError(f"RQ job {handle.id} did not succeed: {result!r}")
        return result.return_value

    def close(self) -> None:
        self.connection.close()
