"""``task_queues`` shared with real Celery 5.7 on RabbitMQ, both directions: the same kombu
``Queue`` objects (a topic exchange with ``x-max-priority``, a queue with a user
dead-letter exchange) declared by celeriac and by Celery without a
``PRECONDITION_FAILED``; a task routed to the topic queue runs on the other side's
worker; ``Reject(requeue=False)`` reaches the user's dead-letter queue with RabbitMQ's
``x-death`` whichever side rejects it.

Messages go through a RabbitMQ vhost of the test's own, results through Redis (a key
prefix of the test's own).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("amqp")
pytest.importorskip("celery")

import amqp

from celeryproc import CONFIG_ENV, WorkerProcess, import_client, wait_until, worker_command

pytestmark = pytest.mark.redis

RESULT_TIMEOUT = 45.0

TASKS = '''\
"""task_queues interop tasks on the {package} side; the other side defines the same."""
from kombu import Exchange, Queue
from {package} import Celery
from {package}.exceptions import Reject

app = Celery({module!r}, broker={broker!r}, backend={backend!r})
app.conf.result_backend_transport_options = {{"global_keyprefix": {prefix!r}}}
news = Exchange("iq-news", type="topic")
app.conf.task_queues = [
    Queue("iq-sports", news, routing_key="news.sports.*",
          queue_arguments={{"x-max-priority": 5}}),
    Queue("iq-work", Exchange("iq-work"), routing_key="iq-work",
          queue_arguments={{"x-dead-letter-exchange": "iq-dlx",
                            "x-dead-letter-routing-key": "iq.dead"}}),
    Queue("iq-dead", Exchange("iq-dlx"), routing_key="iq.dead"),
]
app.conf.task_routes = {{"iq.add": {{"queue": "iq-sports"}}, "iq.refuse": {{"queue": "iq-work"}}}}


@app.task(name="iq.add")
def add(x, y):
    return x + y


@app.task(name="iq.refuse", acks_late=True)
def refuse(tag):
    raise Reject(f"refused {{tag}}", requeue=False)
'''


@pytest.fixture
def raw(rabbitmq_channel: Callable[..., amqp.Channel]) -> amqp.Channel:
    return rabbitmq_channel(queues=("iq-sports", "iq-work", "iq-dead"),
                            exchanges=("iq-news", "iq-work", "iq-dlx"))


def write_tasks(tmp_path: Path, package: str, broker: str, backend: str, prefix: str) -> str:
    module = f"iq_{package}_tasks"
    (tmp_path / f"{module}.py").write_text(TASKS.format(
        package=package, module=module, broker=broker, backend=backend, prefix=prefix))
    return module


@pytest.mark.parametrize("worker_side", ["celeriac", "celery"])
def test_the_same_task_queues_on_both_sides(worker_side: str, rabbitmq_url: str,
                                            redis_url: str, key_prefix: str,
                                            raw: amqp.Channel, tmp_path: Path) -> None:
    client_side = "celery" if worker_side == "celeriac" else "celeriac"
    module = write_tasks(tmp_path, worker_side, rabbitmq_url, redis_url, key_prefix)
    tasks = import_client(tmp_path, write_tasks(tmp_path, client_side, rabbitmq_url,
                                                redis_url, key_prefix))
    # the dead-letter queue, declared as kombu declares Queue("iq-dead", ...): neither
    # worker consumes it, so neither declares it
    raw.exchange_declare("iq-dlx", "direct", durable=True, auto_delete=False)
    raw.queue_declare("iq-dead", durable=True, auto_delete=False)
    raw.queue_bind("iq-dead", "iq-dlx", routing_key="iq.dead")
    try:
        worker = WorkerProcess(worker_command(worker_side, module, "-Q", "iq-sports,iq-work",
                                              name="iq"), tmp_path,
                               drop_env=CONFIG_ENV)
        try:
            assert tasks.add.delay(2, 3).get(timeout=RESULT_TIMEOUT) == 5
            tasks.refuse.delay("r1")
            dead: list[amqp.Message] = []

            def arrived() -> bool:
                got = raw.basic_get("iq-dead", no_ack=True)
                if got is not None:
                    dead.append(got)
                return bool(dead)

            wait_until(arrived, RESULT_TIMEOUT, what="the rejected message in the user's DLQ")
        finally:
            worker.stop()
        death = dead[0].properties["application_headers"]["x-death"][0]
        # a direct exchange's queue is sent to through the default exchange (Celery's rule)
        assert (death["queue"], death["reason"], death["exchange"]) == (
            "iq-work", "rejected", "")
        assert dead[0].delivery_info["routing_key"] == "iq.dead"
        assert "PRECONDITION_FAILED" not in worker.log, worker.log
        assert raw.queue_declare("iq-sports", passive=True)[1] == 0
    finally:
        tasks.app.close()
