"""Celery 5.7 and celeriac: one app module for both, so their setup cannot drift apart.

``BENCH_PACKAGE`` picks the package (``celery`` or ``celeriac``). On Redis both
use the benchmark URL as broker and result store under ``global_keyprefix``.
With ``BENCH_BROKER=default`` (celeriac only) nothing is configured: the
embedded SQLite default (``./celeriac.sqlite3``, results in the same file).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from peerapps import PREFIX, URL, bump
from peerapps.client import SyncClient

PACKAGE = os.environ.get("BENCH_PACKAGE", "celeriac")
Celery = importlib.import_module(PACKAGE).Celery

if os.environ.get("BENCH_BROKER", "redis") == "default":
    if PACKAGE != "celeriac":
        raise SystemExit("BENCH_BROKER=default is celeriac's embedded SQLite default")
    app = Celery("peers")
else:
    app = Celery("peers", broker=URL, backend=URL)
    app.conf.broker_transport_options = {"global_keyprefix": PREFIX}
    app.conf.result_backend_transport_options = {"global_keyprefix": PREFIX}


@app.task(name="bench.incr")
def incr(key: str) -> int:
    return bump(key)


class Client(SyncClient):
    def send(self, key: str) -> Any:
        return incr.delay(key)

    def wait(self, handle: Any, timeout: float) -> Any:
        return handle.get(timeout=timeout)

    def close(self) -> None:
        app.close()
