"""Acceptance tier: the ``workerproc`` and ``workerharness`` helpers importable from the
test modules, and the worker harness's project fixtures.

pytest runs with ``--import-mode=importlib``, which does not put test
directories on ``sys.path``; this conftest (loaded before the modules beside
it) adds this directory so ``from workerproc import ...`` works.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import workerharness as H  # noqa: E402


@pytest.fixture(params=H.BROKERS)
def project_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """``make(**conf)``: a worker-harness project on SQLite, Redis and PostgreSQL in turn
    (:func:`workerharness.making_projects`)."""
    broker = backend = None
    defaults: dict[str, Any] = {}
    if request.param == "redis":
        broker = request.getfixturevalue("redis_url")
        backend = f"sqlite:///{tmp_path / 'results.sqlite3'}"
        prefix = request.getfixturevalue("key_prefix")
        defaults["broker_transport_options"] = {"global_keyprefix": prefix}
    elif request.param == "postgres":
        broker = backend = request.getfixturevalue("postgres_url")
    with H.making_projects(tmp_path, broker, backend, **defaults) as make:
        yield make


@pytest.fixture
def amqp_project(rabbitmq_url: str, tmp_path: Path) -> Iterator[Any]:
    """``make(**conf)``: a worker-harness project on RabbitMQ (a vhost of the test's own)
    with SQLite results."""
    pytest.importorskip("amqp")
    with H.making_projects(tmp_path, rabbitmq_url,
                           f"sqlite:///{tmp_path / 'results.sqlite3'}") as make:
        yield make
