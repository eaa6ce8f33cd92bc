"""Celery's ``auth`` serializer between real Celery 5.7 and celeriac on Redis, both ways.

(a) A Celery client calling ``app.setup_security()`` sends signed tasks to a
``celeriac worker`` subprocess (which sets signing up from its settings); Celery
reads the results. A plain (unsigned) Celery client's message is dead-lettered
as ``unsigned`` and never runs.
(b) A celeriac client (signing set up at its first publish) sends to a
``celery worker`` subprocess; celeriac reads the results.

Both sides use the TEST ONLY key and certificate of tests/fixtures and their own
``global_keyprefix``, so the test needs no empty Redis and leaves nothing behind.
Celery is a test dependency only; celeriac never imports it.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from celeryproc import WorkerProcess, import_client, wait_until

pytestmark = pytest.mark.redis

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RESULT_TIMEOUT = 30.0

TASKS = '''\
"""Signed interop tasks on the {package} side."""
from {package} import Celery

URL, PREFIX = {url!r}, {prefix!r}
app = Celery({module!r}, broker=URL, backend=URL)
app.conf.broker_transport_options = {{"global_keyprefix": PREFIX}}
app.conf.result_backend_transport_options = {{"global_keyprefix": PREFIX}}
app.conf.update({conf!r})
{setup}


@app.task(name="interop.add")
def add(x, y):
    return x + y


@app.task(name="interop.echo")
def echo(value):
    return value
'''

SIGNED = {"task_serializer": "auth", "accept_content": ["auth"], "result_serializer": "json",
          "result_accept_content": ["json"],
          "security_key": str(FIXTURES / "test-signing-key.pem"),
          "security_certificate": str(FIXTURES / "test-signing-cert.pem"),
          "security_cert_store": str(FIXTURES / "test-signing-cert.pem"),
          "security_digest": "sha256"}


def write_tasks(tmp_path: Path, package: str, url: str, prefix: str, conf: dict[str, Any],
                setup: str = "", name: str | None = None) -> str:
    module = name or f"auth_{package}_tasks"
    (tmp_path / f"{module}.py").write_text(TASKS.format(
        package=package, url=url, prefix=prefix, module=module, conf=conf, setup=setup))
    return module


@pytest.fixture(autouse=True)
def clean_registry() -> Any:
    """Both libraries' signing set-ups are process-wide: restore them afterwards."""
    from celeriac import serialization

    saved, disabled = dict(serialization._SERIALIZERS), set(serialization._DISABLED)
    kombu = pytest.importorskip("kombu.serialization")
    registry = kombu.registry
    kombu_disabled = set(registry._disabled_content_types)
    yield
    serialization._SERIALIZERS.clear()
    serialization._SERIALIZERS.update(saved)
    serialization._DISABLED.clear()
    serialization._DISABLED.update(disabled)
    registry._disabled_content_types.clear()
    registry._disabled_content_types.update(kombu_disabled)
    registry._set_default_serializer("json")


def test_celery_client_signs_for_a_celeriac_worker(redis_url: str, key_prefix: str,
                                                   tmp_path: Path) -> None:
    pytest.importorskip("celery")
    write_tasks(tmp_path, "celeriac", redis_url, key_prefix, SIGNED)
    signed = import_client(tmp_path, write_tasks(tmp_path, "celery", redis_url, key_prefix,
                                                 SIGNED, "app.setup_security()"))
    plain = import_client(tmp_path, write_tasks(
        tmp_path, "celery", redis_url, key_prefix,
        {"result_accept_content": ["json"]}, name="auth_celery_plain"))
    try:
        worker = WorkerProcess([sys.executable, "-m", "celeriac", "-A", "auth_celeriac_tasks",
                                "worker", "-P", "threads", "-c", "1", "-l", "INFO"], tmp_path)
        try:
            assert signed.add.delay(2, 3).get(timeout=RESULT_TIMEOUT) == 5
            assert signed.echo.delay({"nested": [1, "two"]}).get(
                timeout=RESULT_TIMEOUT) == {"nested": [1, "two"]}
            unsigned_id = plain.add.delay(40, 2).id
            wait_until(lambda: f"Dead-lettering message {unsigned_id} (unsigned): content type "
                               f"'application/json'" in worker.log,
                       RESULT_TIMEOUT, what="the unsigned message dead-lettered")
            assert signed.add.delay(1, 1).get(timeout=RESULT_TIMEOUT) == 2  # still serving
        finally:
            worker.stop()
        assert f"Task interop.add[{unsigned_id}] received" not in worker.log
        assert "Traceback" not in worker.log, worker.log
    finally:
        signed.app.close()
        plain.app.close()


def test_celeriac_client_signs_for_a_celery_worker(redis_url: str, key_prefix: str,
                                                   tmp_path: Path) -> None:
    pytest.importorskip("celery")
    write_tasks(tmp_path, "celery", redis_url, key_prefix, SIGNED, "app.setup_security()")
    client = import_client(tmp_path, write_tasks(tmp_path, "celeriac", redis_url, key_prefix,
                                                 SIGNED))
    try:
        worker = WorkerProcess([sys.executable, "-m", "celery", "-A", "auth_celery_tasks",
                                "worker", "-P", "solo", "-n",
                                f"auth-{uuid.uuid4().hex[:6]}@localhost", "--without-mingle",
                                "--without-gossip", "--without-heartbeat", "-l", "INFO"],
                               tmp_path)
        try:
            assert client.add.delay(2, 3).get(timeout=RESULT_TIMEOUT) == 5
            assert client.echo.delay({"nested": [1, "two"]}).get(
                timeout=RESULT_TIMEOUT) == {"nested": [1, "two"]}
        finally:
            worker.stop()
        assert "SecurityError" not in worker.log and "ContentDisallowed" not in worker.log, \
            worker.log
    finally:
        client.app.close()
