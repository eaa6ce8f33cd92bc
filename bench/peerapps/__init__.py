"""The task every system runs in ``bench/peers.py``, and the client protocol around it.

Each module here defines, for one task queue, the same task (``incr(key)``:
``INCR key`` on the benchmark's Redis, returning the new value, so every system
counts completions the same way and stores a non-empty result) and a client
with three operations: enqueue one call, wait for one call's result, and
close. Configuration comes from the environment the harness sets:

``BENCH_URL``
    Redis URL (the broker, the result store and the counters).
``BENCH_PREFIX``
    unique key prefix for this run of one setup (ends with ``:``).

``python -m peerapps.client <module>`` (see :mod:`peerapps.client`) serves the
harness's enqueue, trickle and round-trip commands for one module.
"""

from __future__ import annotations

import os

import redis

URL = os.environ.get("BENCH_URL", "redis://127.0.0.1:6379/14")
PREFIX = os.environ.get("BENCH_PREFIX", "peers-dev:")

_client: tuple[int, redis.Redis] | None = None


def bump(key: str) -> int:
    """The task body shared by every system: one ``INCR`` on its own connection."""
    global _client
    if _client is None or _client[0] != os.getpid():  # one client per (forked) process
        _client = (os.getpid(), redis.Redis.from_url(URL))
    return int(_client[1].incr(key))
