"""Events and remote control between celeriac and real Celery 5.7, both ways, on Redis and
on RabbitMQ (``broker``: a vhost of the test's own, Redis results).

(a) A ``celeriac worker -E`` subprocess: Celery's own CLI (``celery inspect ping``,
``celery inspect registered``) gets its replies, and Celery's event receiver and
``State`` see the node and its tasks.
(b) A ``celery worker -E`` subprocess: ``celeriac inspect ping`` and
``app.control.inspect()`` get its replies, and celeriac's receiver sees its events.

Both sides use one ``global_keyprefix`` (kombu prefixes PUBLISH and its
subscriptions the same way), so the test needs no empty Redis.
On RabbitMQ both use kombu's exchanges (``celeryev``, ``celery.pidbox``,
``reply.celery.pidbox``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from celeryproc import WorkerProcess, import_client, subprocess_env, wait_until

pytestmark = pytest.mark.redis

TASKS = '''\
import time
from {package} import Celery

app = Celery({module!r}, broker={broker!r}, backend={url!r})
app.conf.broker_transport_options = {broker_options!r}
app.conf.result_backend_transport_options = {{"global_keyprefix": {prefix!r}}}
app.conf.task_send_sent_event = True


@app.task(name="mon.add")
def add(x, y):
    return x + y


@app.task(name="mon.sleep")
def sleep(seconds):
    time.sleep(seconds)
    return seconds
'''


def write(tmp_path: Path, package: str, url: str, prefix: str, broker: str | None = None) -> str:
    """The tasks module; ``broker`` (default: ``url``, Redis) may be RabbitMQ."""
    module = f"mon_{package}_{uuid.uuid4().hex[:6]}"
    options = {} if broker else {"global_keyprefix": prefix}
    (tmp_path / f"{module}.py").write_text(TASKS.format(
        package=package, module=module, url=url, prefix=prefix, broker=broker or url,
        broker_options=options))
    return module


@pytest.fixture(params=["redis", "amqp"])
def broker(request: pytest.FixtureRequest) -> str | None:
    """None: Redis is the broker too; else the RabbitMQ URL of a vhost of the test's own."""
    if request.param == "redis":
        return None
    pytest.importorskip("amqp")
    return str(request.getfixturevalue("rabbitmq_url"))


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, env=subprocess_env(cwd), capture_output=True,
                          text=True, timeout=60)


def test_celery_tools_see_a_celeriac_worker(redis_url: str, key_prefix: str,
                                            tmp_path: Path, broker: str | None) -> None:
    pytest.importorskip("celery")
    ours = write(tmp_path, "celeriac", redis_url, key_prefix, broker)
    theirs = write(tmp_path, "celery", redis_url, key_prefix, broker)
    client = import_client(tmp_path, theirs)
    from celery.events.state import State

    state = State()
    seen: list[str] = []

    def on_event(event: dict[str, Any]) -> None:
        seen.append(event["type"])
        state.event(event)

    stop = threading.Event()

    def listen() -> None:
        with client.app.connection() as conn:
            receiver = client.app.events.Receiver(conn, handlers={"*": on_event})
            for _ in receiver.itercapture(limit=None, timeout=None, wakeup=True):
                if stop.is_set():
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(1.0)  # the receiver subscribes before the worker comes online
    worker = WorkerProcess([sys.executable, "-m", "celeriac", "-A", ours, "worker", "-P",
                            "threads", "-c", "2", "-E", "-n", "mon1@%h", "-l", "INFO"],
                           tmp_path)
    try:
        ping = run(tmp_path, sys.executable, "-m", "celery", "-A", theirs, "inspect", "ping",
                   "-t", "3")
        assert ping.returncode == 0, ping.stderr
        assert "mon1@" in ping.stdout and "pong" in ping.stdout
        registered = run(tmp_path, sys.executable, "-m", "celery", "-A", theirs, "inspect",
                         "registered", "-t", "3")
        assert "mon.add" in registered.stdout and "mon.sleep" in registered.stdout
        memsample = run(tmp_path, sys.executable, "-m", "celery", "-A", theirs, "inspect",
                        "memsample", "-t", "3", "--json")
        assert memsample.returncode == 0, memsample.stderr
        rss = json.loads(memsample.stdout)
        assert [k.startswith("mon1@") for k in rss] == [True]
        assert re.fullmatch(r"\d+(\.\d+)?(KB|MB|GB)", next(iter(rss.values())))
        memdump = run(tmp_path, sys.executable, "-m", "celery", "-A", theirs, "inspect",
                      "memdump", "-t", "3")
        assert "- rss (sample):" in memdump.stdout and "- rss (end): " in memdump.stdout
        result = client.add.delay(20, 22)
        assert result.get(timeout=30) == 42
        wait_until(lambda: state.tasks.get(result.id) is not None
                   and state.tasks[result.id].state == "SUCCESS", 15, what="task-succeeded")
        task = state.tasks[result.id]
        assert task.result == "42" and task.worker.hostname.startswith("mon1@")
        assert task.name == "mon.add"
        node = next(w for name, w in state.workers.items() if name.startswith("mon1@"))
        assert node.alive
        assert "worker-online" in seen or "worker-heartbeat" in seen
    finally:
        stop.set()
        worker.stop()
    assert worker.proc.returncode == 0, worker.log


def test_celeriac_tools_see_a_celery_worker(redis_url: str, key_prefix: str,
                                            tmp_path: Path, broker: str | None) -> None:
    pytest.importorskip("celery")
    ours = write(tmp_path, "celeriac", redis_url, key_prefix, broker)
    theirs = write(tmp_path, "celery", redis_url, key_prefix, broker)
    client = import_client(tmp_path, ours)
    worker = WorkerProcess([sys.executable, "-m", "celery", "-A", theirs, "worker", "-P",
                            "prefork", "-c", "1", "-E", "-n", "kw1@%h", "-l", "INFO",
                            "--without-mingle", "--without-gossip"], tmp_path)
    try:
        ping = run(tmp_path, sys.executable, "-m", "celeriac", "-A", ours, "inspect", "ping",
                   "-t", "3")
        assert ping.returncode == 0, ping.stderr
        assert "kw1@" in ping.stdout and "pong" in ping.stdout
        events: list[dict[str, Any]] = []
        receiver = client.app.events.Receiver(handlers={"*": events.append})
        listening = threading.Thread(target=receiver.capture, daemon=True)
        listening.start()
        time.sleep(0.5)
        running = client.sleep.delay(30)
        inspect = client.app.control.inspect(timeout=3)
        active = wait_until(lambda: next(iter((inspect.active() or {}).values()), None), 30,
                            what="the task to be active")
        assert [a["id"] for a in active] == [running.id]
        client.app.control.revoke(running.id, terminate=True, signal="SIGKILL")
        wait_until(lambda: any(e["type"] == "task-revoked" and e.get("uuid") == running.id
                               for e in events), 30, what="task-revoked from the Celery worker")
        receiver.should_stop = True
        kinds = {e["type"] for e in events if e.get("uuid") == running.id}
        assert {"task-sent", "task-received", "task-started", "task-revoked"} <= kinds
    finally:
        worker.stop()
