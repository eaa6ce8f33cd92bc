"""countdown through fanout and topic exchanges, shared with real Celery 5.7 both ways.

The same quorum ``task_queues`` on both sides (Celery uses its native delayed delivery
on quorum queues): a fanout exchange with two queues and a topic exchange with two
queues whose patterns both match the route's key. One task sent with ``countdown`` to
each route runs once per queue the exchange reaches (twice each), on the other side's
worker, whichever side sent it. Each run appends its task id to a file.

Messages go through a RabbitMQ vhost of the test's own; no results are stored.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytest.importorskip("amqp")
pytest.importorskip("celery")

import amqp

from celeryproc import CONFIG_ENV, WorkerProcess, import_client, wait_until, worker_command

QUEUES = "dx-fan-a,dx-fan-b,dx-sports,dx-all-news"

TASKS = '''\
"""Delayed delivery through exchanges, the {package} side; the other defines the same."""
from kombu import Exchange, Queue
from {package} import Celery

app = Celery({module!r}, broker={broker!r})
app.conf.task_ignore_result = True
quorum = {{"x-queue-type": "quorum"}}
fan, news = Exchange("dx-fan", type="fanout"), Exchange("dx-news", type="topic")
app.conf.task_queues = [
    Queue("dx-fan-a", fan, routing_key="dx.fan", queue_arguments=quorum),
    Queue("dx-fan-b", fan, routing_key="dx.fan", queue_arguments=quorum),
    Queue("dx-sports", news, routing_key="news.sports.*", queue_arguments=quorum),
    Queue("dx-all-news", news, routing_key="news.#", queue_arguments=quorum),
]
app.conf.task_routes = {{"dx.audit": {{"queue": "dx-fan-a"}},
                        "dx.tennis": {{"exchange": "dx-news", "exchange_type": "topic",
                                      "routing_key": "news.sports.tennis"}}}}


def note(task_id):
    with open({runs!r}, "a") as fh:
        fh.write(task_id + "\\n")


@app.task(name="dx.audit", bind=True)
def audit(self):
    note(self.request.id)


@app.task(name="dx.tennis", bind=True)
def tennis(self):
    note(self.request.id)
'''


def write_tasks(tmp_path: Path, package: str, broker: str) -> str:
    module = f"dx_{package}_tasks"
    (tmp_path / f"{module}.py").write_text(TASKS.format(
        package=package, module=module, broker=broker, runs=str(tmp_path / "runs.txt")))
    return module


def declared(url: str) -> bool:
    """The delay layout and the last queue's bindings exist: a worker declares them when
    it starts consuming, and RabbitMQ drops a Celery client's delayed message sent to
    a virtual host where no worker ever did (kombu publishes without confirms)."""
    split = urlsplit(url)
    conn = amqp.Connection(f"{split.hostname}:{split.port}", userid="guest", password="guest",
                           virtual_host=unquote(split.path[1:]))
    conn.connect()
    try:
        conn.channel().exchange_declare("celery_delayed_0", "topic", passive=True)
        conn.channel().queue_declare("dx-all-news", passive=True)
        time.sleep(0.5)  # its bindings follow at once
        return True
    except amqp.exceptions.NotFound:
        return False
    finally:
        conn.close()


def runs(tmp_path: Path) -> collections.Counter[str]:
    try:
        return collections.Counter((tmp_path / "runs.txt").read_text().split())
    except FileNotFoundError:
        return collections.Counter()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("worker_side", ["celeriac", "celery"])
def test_countdown_through_exchanges_both_ways(worker_side: str, rabbitmq_url: str,
                                               tmp_path: Path) -> None:
    client_side = "celery" if worker_side == "celeriac" else "celeriac"
    module = write_tasks(tmp_path, worker_side, rabbitmq_url)
    tasks = import_client(tmp_path, write_tasks(tmp_path, client_side, rabbitmq_url))
    try:
        worker = WorkerProcess(worker_command(worker_side, module, "-Q", QUEUES, concurrency=2,
                                              name="dx"), tmp_path,
                               drop_env=CONFIG_ENV)
        try:
            wait_until(lambda: declared(rabbitmq_url), 30, what="the worker's declarations")
            sent = time.monotonic()
            ids = [tasks.audit.apply_async(countdown=3).id,
                   tasks.tennis.apply_async(countdown=3).id]
            try:
                wait_until(lambda: all(runs(tmp_path)[i] >= 2 for i in ids), 90,
                           what="two runs of each delayed task")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {runs(tmp_path)}\n{worker.log}") from None
            assert time.monotonic() - sent >= 2.5  # they waited in the delay layout
            time.sleep(2)  # and no third copy comes
        finally:
            worker.stop()
        assert {i: runs(tmp_path)[i] for i in ids} == dict.fromkeys(ids, 2), worker.log
        assert "PRECONDITION_FAILED" not in worker.log, worker.log
    finally:
        tasks.app.close()
