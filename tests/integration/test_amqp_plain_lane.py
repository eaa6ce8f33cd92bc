"""A plain ``delay()`` on RabbitMQ publishes, byte for byte, what the normal path publishes.

The lane (:mod:`celeriac.app.templates`, :mod:`celeriac.brokers.amqp.plain`)
fills a per-task envelope; these tests publish the same call through both
paths and compare what RabbitMQ delivers (the random ``message_id`` aside),
for arguments that need escaping, task options, a ``task_queues`` exchange,
and a call after the publishing connection was lost (its queue is declared
again). Each test has a vhost of its own (``rabbitmq_url``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("amqp")

from celeriac import Celery, hooks, signals
from celeriac.app import templates
from celeriac.app.publish import send_task


@pytest.fixture(autouse=True)
def no_global_listeners(monkeypatch: pytest.MonkeyPatch) -> None:
    """Receivers other tests of the process left connected would close the lane."""
    monkeypatch.setattr(signals.before_task_publish, "_receivers", [])
    monkeypatch.setattr(signals.after_task_publish, "_receivers", [])
    monkeypatch.setattr(hooks, "_interceptors", [])


@pytest.fixture
def app(rabbitmq_url: str) -> Iterator[Celery]:
    app = Celery("lane", broker=rabbitmq_url, set_as_current=False)
    app.conf.task_ignore_result = True

    @app.task(name="lane.echo")
    def echo(*args: Any, **kwargs: Any) -> Any:
        return args

    @app.task(name="lane.limited", time_limit=30, priority=5, queue="limited")
    def limited(x: Any) -> Any:
        return x

    yield app
    app.close()


def delivered(chan: Any, queue: str) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
    msg = chan.basic_get(queue, no_ack=True)
    assert msg is not None, f"nothing in {queue!r}"
    props = dict(msg.properties)
    props.pop("message_id")  # the delivery tag: random per call
    info = {k: msg.delivery_info[k] for k in ("exchange", "routing_key")}
    return props, msg.body, info


def both_paths(app: Celery, chan: Any, queue: str, name: str, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """(lane, normal path) deliveries of the same call with the same task id."""
    task = app.tasks[name]
    task.delay(*args, **kwargs)  # the first publish of a queue declares it (normal path)
    chan.queue_purge(queue)
    assert templates.publish_plain(app, task, args, kwargs, "fixed-id") == "fixed-id", \
        "the call did not take the lane"
    send_task(app, name, args, kwargs, task_id="fixed-id", task=task)
    return delivered(chan, queue), delivered(chan, queue)


@pytest.mark.parametrize(("args", "kwargs"), [
    ((), {}),
    ((1, 2.5, None, True), {"k": [1, {"a": "b"}]}),
    (('quote " backslash \\ newline \n tab \t', "üñí©ødé ☃", "\x00"), {"é": "\u2028"}),
])
def test_the_lane_publishes_what_the_normal_path_publishes(
        app: Celery, rabbitmq_channel: Callable[..., Any], args: Any, kwargs: Any) -> None:
    chan = rabbitmq_channel(queues=["celery"])
    lane, normal = both_paths(app, chan, "celery", "lane.echo", args, kwargs)
    assert lane == normal
    headers = lane[0]["application_headers"]
    assert headers["id"] == headers["root_id"] == lane[0]["correlation_id"] == "fixed-id"
    assert lane[0]["delivery_mode"] == 2


def test_task_options_are_in_the_envelope(app: Celery,
                                          rabbitmq_channel: Callable[..., Any]) -> None:
    chan = rabbitmq_channel(queues=["limited"])
    lane, normal = both_paths(app, chan, "limited", "lane.limited", ("x",), {})
    assert lane == normal
    assert lane[0]["application_headers"]["timelimit"] == [30, None]
    assert lane[0]["priority"] == 4  # celeriac's 5 as RabbitMQ's highest-first 9 - 5


def test_a_task_queues_exchange_is_in_the_envelope(
        rabbitmq_url: str, rabbitmq_channel: Callable[..., Any]) -> None:
    chan = rabbitmq_channel(queues=["topical"], exchanges=["topics"])
    app = Celery("lane", broker=rabbitmq_url, set_as_current=False)
    app.conf.task_ignore_result = True
    app.conf.task_queues = [{"name": "topical", "exchange": "topics",
                             "exchange_type": "topic", "routing_key": "t.#"}]
    app.conf.task_default_queue = "topical"
    app.task(name="lane.echo")(lambda *args: args)
    try:
        lane, normal = both_paths(app, chan, "topical", "lane.echo", (1,), {})
    finally:
        app.close()
    assert lane == normal
    assert lane[2] == {"exchange": "topics", "routing_key": "t.#"}


def test_after_a_lost_connection_the_lane_declares_its_queue_again(
        app: Celery, rabbitmq_channel: Callable[..., Any]) -> None:
    chan = rabbitmq_channel(queues=["celery"])
    echo = app.tasks["lane.echo"]
    echo.delay(0)  # declares the queue
    assert templates.publish_plain(app, echo, (1,), {}, None) is not None
    chan.queue_delete("celery")
    broker: Any = app.broker
    with broker._pub.lock:
        broker._pub.reset()  # the connection is gone (as after a RabbitMQ restart)
    sent = echo.delay(2)
    got = chan.basic_get("celery", no_ack=True)
    assert got is not None and got.properties["correlation_id"] == sent.id
