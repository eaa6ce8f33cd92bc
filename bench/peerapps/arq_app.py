"""arq on Redis: an ``async def`` task doing the same ``INCR`` on arq's own connection.

``python -m peerapps.arq_app`` runs one worker (``arq.worker.run_worker``) with
logging at WARNING: arq's CLI logs two INFO lines per job, which would cost
more than the task. Worker settings come from the environment so the harness
can try several: ``BENCH_ARQ_MAX_JOBS`` (arq's default 10),
``BENCH_ARQ_POLL_DELAY`` (default 0.5 s), ``BENCH_ARQ_READ_LIMIT`` (default
``max(max_jobs * 5, 100)``); ``BENCH_ARQ_RESULT_POLL`` is the client's
``Job.result(poll_delay=...)`` (default 0.5 s). Job and result keys have arq's
fixed ``arq:`` prefix (see :mod:`peerapps.rq_app` for how the harness copes).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import run_worker

from peerapps import PREFIX, URL
from peerapps.client import AsyncClient

QUEUE = f"{PREFIX}arq:queue"
RESULT_POLL = float(os.environ.get("BENCH_ARQ_RESULT_POLL", "0.5"))


async def incr(ctx: dict[str, Any], key: str) -> int:
    return int(await ctx["redis"].incr(key))


class WorkerSettings:
    functions = [incr]
    redis_settings = RedisSettings.from_dsn(URL)
    queue_name = QUEUE
    max_jobs = int(os.environ.get("BENCH_ARQ_MAX_JOBS", "10"))
    poll_delay = float(os.environ.get("BENCH_ARQ_POLL_DELAY", "0.5"))
    queue_read_limit = int(os.environ.get("BENCH_ARQ_READ_LIMIT", "0")) or None


class Client(AsyncClient):
    async def open(self) -> None:
        self.pool = await create_pool(RedisSettings.from_dsn(URL), default_queue_name=QUEUE)

    async def asend(self, key: str) -> Any:
        return await self.pool.enqueue_job("incr", key)

    async def await_result(self, handle: Any, timeout: float) -> Any:
        return await handle.result(timeout=timeout, poll_delay=RESULT_POLL)

    async def aclose(self) -> None:
        await self.pool.aclose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    run_worker(WorkerSettings)  # type: ignore[arg-type]
