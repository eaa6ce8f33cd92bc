"""``<hostname> ready.`` and ``worker_ready`` come after the worker's queues exist on RabbitMQ.

A client that waits for the worker's ``ready.`` line and then publishes with a
plain py-amqp ``basic_publish`` (no declaration of its own, ``mandatory=True``)
to a fresh vhost must not get its messages back as unroutable (``basic.return``),
whether it publishes through the default exchange with the queue's name or
through the queue's own exchange (the ``celery`` exchange of the default queue),
and the tasks run. A ``worker_ready`` receiver in the worker process finds the
queue declared. Every pool: solo, threads, asyncio, prefork.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from workerproc import project, read_lines

from celeryproc import wait_until
from rabbit import connect

SOURCE = """
import os

import amqp

from celeriac import Celery
from celeriac.signals import worker_ready

app = Celery("proj")
HERE = os.path.dirname(os.path.abspath(__file__))


@app.task(name="proj.note")
def note(word):
    with open(os.path.join(HERE, "ran.txt"), "a") as out:
        out.write(word + "\\n")


@worker_ready.connect
def queue_exists(sender=None, **kwargs):
    url = os.environ["CELERIAC_BROKER_URL"]
    host, vhost = url.split("@", 1)[1].split("/", 1)
    conn = amqp.Connection(host, userid="guest", password="guest", virtual_host=vhost)
    conn.connect()
    try:
        conn.channel().queue_declare(os.environ["READY_QUEUE"], passive=True)
        seen = "declared"
    except amqp.exceptions.NotFound as exc:
        seen = f"missing: {exc}"
    finally:
        conn.collect()
    with open(os.path.join(HERE, "at-ready.txt"), "a") as out:
        out.write(seen + "\\n")
"""


def celery_message(task: str, args: list[Any]) -> tuple[bytes, dict[str, Any]]:
    """A Celery protocol 2 task message as a plain client sends it: (body, properties)."""
    task_id = str(uuid.uuid4())
    body = json.dumps([args, {}, {"callbacks": None, "errbacks": None, "chain": None,
                                  "chord": None}]).encode()
    headers = {"lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None,
               "expires": None, "group": None, "group_index": None, "retries": 0,
               "timelimit": [None, None], "root_id": task_id, "parent_id": None,
               "argsrepr": repr(tuple(args)), "kwargsrepr": "{}", "origin": "raw@test",
               "ignore_result": True}
    properties = {"application_headers": headers, "correlation_id": task_id,
                  "content_type": "application/json", "content_encoding": "utf-8",
                  "delivery_mode": 2, "priority": 0}
    return body, properties


def publish_raw(url: str, exchange: str, routing_key: str, word: str) -> list[str]:
    """Publish ``proj.note(word)`` with ``mandatory=True`` on a confirm channel; the
    ``basic.return`` replies RabbitMQ sent (each an unroutable message), or why the
    exchange refused it (it does not exist)."""
    import amqp

    returned: list[str] = []
    conn = connect(url)
    try:
        chan = conn.channel()
        chan.events["basic_return"].add(
            lambda exc, ex, key, message: returned.append(f"{ex!r}/{key!r}: {exc}"))
        body, properties = celery_message("proj.note", [word])
        # waits for the confirm, which RabbitMQ sends after any basic.return
        try:
            chan.basic_publish_confirm(amqp.Message(body, **properties), exchange=exchange,
                                       routing_key=routing_key, mandatory=True,
                                       confirm_timeout=30)
        except amqp.exceptions.NotFound as exc:  # the exchange does not exist (yet)
            returned.append(f"{exchange!r}/{routing_key!r}: {exc}")
    finally:
        conn.collect()
    return returned


def queue_exists(url: str, queue: str) -> bool:
    import amqp

    conn = connect(url)
    try:
        conn.channel().queue_declare(queue, passive=True)
        return True
    except amqp.exceptions.NotFound:
        return False
    finally:
        conn.collect()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("pool", ["solo", "threads", "asyncio", "prefork"])
def test_publish_right_after_ready_is_routed(pool: str, rabbitmq_url: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("amqp")
    queue = f"fresh-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("READY_QUEUE", queue)  # the worker_ready receiver looks for it
    assert not queue_exists(rabbitmq_url, queue)
    backend = f"sqlite:///{tmp_path / 'results.sqlite3'}"
    with project(tmp_path, SOURCE, broker_url=rabbitmq_url, backend_url=backend) as proj:
        with proj.worker("-Q", queue, pool=pool, concurrency=2) as worker:
            # at once after "ready.": nothing of ours declares the queue or its exchange
            returned = publish_raw(rabbitmq_url, "", queue, "default-exchange")
            returned += publish_raw(rabbitmq_url, queue, queue, "own-exchange")
            assert returned == [], f"unroutable right after ready.:\n{worker.log}"
            wait_until(lambda: len(read_lines(tmp_path / "ran.txt")) == 2, 60,
                       what=f"both tasks to run:\n{worker.log}")
        assert sorted(read_lines(tmp_path / "ran.txt")) == ["default-exchange", "own-exchange"]
        assert read_lines(tmp_path / "at-ready.txt") == ["declared"], worker.log
        assert worker.log.count("ready.") == 1
        assert "not declared" not in worker.log
