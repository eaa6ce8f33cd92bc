"""A plain ``delay()`` on Redis stores, byte for byte, what the normal publishing path stores.

The lane (:mod:`celeriac.app.templates`) builds the stored text from a per-task
template; these tests publish the same call through both paths and compare the
stored bytes (the random delivery tag aside), for arguments that need JSON
escaping, task options, settings changed between calls, and calls the lane
must leave to the normal path (signals, routes, a size limit, inside a task).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import redis

from celeriac import Celery, hooks, signals
from celeriac.app import templates
from celeriac.app.publish import send_task

pytestmark = pytest.mark.redis

TAG = re.compile(rb'"delivery_tag": "[0-9a-f-]{36}"')


@pytest.fixture(autouse=True)
def no_global_listeners(monkeypatch: pytest.MonkeyPatch) -> None:
    """Receivers and interceptors other tests of the process left connected would (rightly)
    close the lane for every call: these tests start from none."""
    from celeriac import hooks

    monkeypatch.setattr(signals.before_task_publish, "_receivers", [])
    monkeypatch.setattr(signals.after_task_publish, "_receivers", [])
    monkeypatch.setattr(hooks, "_interceptors", [])


@pytest.fixture
def app(redis_url: str, key_prefix: str) -> Celery:
    app = Celery("lane", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": key_prefix}
    app.conf.result_backend_transport_options = {"global_keyprefix": key_prefix}

    @app.task(name="lane.echo")
    def echo(*args: Any, **kwargs: Any) -> Any:
        return args

    @app.task(name="lane.limited", time_limit=30, ignore_result=True, priority=5)
    def limited(x: Any) -> Any:
        return x

    return app


def why_not(app: Celery, task: Any) -> dict[str, Any]:
    """What the lane looks at, for the message of a failed assertion."""
    from celeriac.app import state

    return {"open": templates._lane_open(app, task), "key": templates._key(app, task),
            "declared": app.broker.declared(task.queue or "celery"),
            "worker task": state.get_current_worker_task(),
            "receivers": (signals.before_task_publish._receivers,
                          signals.after_task_publish._receivers, hooks._interceptors)}


def stored(raw: redis.Redis, key: str) -> list[bytes]:
    return [TAG.sub(b'"delivery_tag": "-"', item) for item in raw.lrange(key, 0, -1)]


def both_paths(app: Celery, raw: redis.Redis, key: str, name: str, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> tuple[bytes, bytes]:
    """(lane, normal path) bytes of the same call with the same task id."""
    task = app.tasks[name]
    task.delay(*args, **kwargs)  # the first publish of a queue declares it (normal path)
    raw.delete(key)
    lane_id = templates.publish_plain(app, task, args, kwargs, "fixed-id")
    assert lane_id == "fixed-id", f"the call did not take the lane: {why_not(app, task)}"
    send_task(app, name, args, kwargs, task_id="fixed-id", task=task)
    lane, normal = stored(raw, key)[::-1]
    return lane, normal


@pytest.mark.parametrize(("args", "kwargs"), [
    ((), {}),
    ((1, 2.5, None, True), {"k": [1, {"a": "b"}]}),
    (('quote " backslash \\ newline \n tab \t', "üñí©ødé ☃", "\x00"), {"é": "\u2028"}),
])
def test_the_lane_stores_what_the_normal_path_stores(app: Celery, raw: redis.Redis,
                                                     key_prefix: str, args: Any,
                                                     kwargs: Any) -> None:
    lane, normal = both_paths(app, raw, f"{key_prefix}celery", "lane.echo", args, kwargs)
    assert lane == normal
    message = json.loads(lane)
    assert message["headers"]["id"] == message["headers"]["root_id"] == "fixed-id"
    assert message["properties"]["correlation_id"] == "fixed-id"


def test_task_options_and_their_step_are_in_the_template(app: Celery, raw: redis.Redis,
                                                        key_prefix: str) -> None:
    key = f"{key_prefix}celery\x06\x163"  # priority 5 goes to kombu's step 3
    lane, normal = both_paths(app, raw, key, "lane.limited", ("x",), {})
    assert lane == normal
    headers = json.loads(lane)["headers"]
    assert headers["timelimit"] == [30, None] and headers["ignore_result"] is True


def test_a_changed_setting_makes_a_new_template(app: Celery, raw: redis.Redis,
                                                key_prefix: str) -> None:
    echo = app.tasks["lane.echo"]
    echo.delay(1)
    app.conf.task_default_queue = "elsewhere"
    app.conf.task_time_limit = 12
    echo.delay(2)  # declares "elsewhere" on the normal path
    result = echo.delay(3)  # the lane, with a new template
    third = json.loads(raw.lindex(f"{key_prefix}elsewhere", 0))
    assert third["headers"]["id"] == result.id
    assert third["headers"]["timelimit"] == [12, None]
    assert third["properties"]["delivery_info"]["routing_key"] == "elsewhere"
    assert raw.llen(f"{key_prefix}celery") == 1


def test_calls_the_lane_cannot_express_take_the_normal_path(app: Celery,
                                                             raw: redis.Redis,
                                                             key_prefix: str) -> None:
    echo = app.tasks["lane.echo"]
    echo.delay()  # declares the queue
    assert templates.publish_plain(app, echo, (), {}, None) is not None
    seen: list[Any] = []

    def listener(**kwargs: Any) -> None:
        seen.append(kwargs["headers"]["id"])

    signals.before_task_publish.connect(listener)
    try:
        assert templates.publish_plain(app, echo, (), {}, None) is None
        sent = echo.delay()
        assert seen == [sent.id]  # the normal path sent the signal
    finally:
        signals.before_task_publish.disconnect(listener)
    app.conf.task_message_max_size = 2 * 1024 * 1024
    assert templates.publish_plain(app, echo, ("x" * 1024 * 1024,), {}, None) is None
    app.conf.task_message_max_size = None
    app.conf.task_routes = {"lane.echo": {"queue": "routed"}}
    assert templates.publish_plain(app, echo, (), {}, None) is None
    echo.delay()
    assert raw.llen(f"{key_prefix}routed") == 1


def test_a_plain_call_is_one_packed_write(app: Celery, raw: redis.Redis,
                                          key_prefix: str, monkeypatch: Any) -> None:
    """After the first call (which declares the queue), each plain ``delay()`` is one write
    of its ``LPUSH`` (and the wake-up token) on the thread's raw connection."""
    from celeriac.brokers.redis.direct import Direct

    echo = app.tasks["lane.echo"]
    echo.delay(0)
    writes: list[tuple[bytes, int]] = []
    real = Direct.send_packed

    def send_packed(self: Direct, packed: bytes, count: int, bound: Any) -> Any:
        writes.append((packed, count))
        return real(self, packed, count, bound)

    monkeypatch.setattr(Direct, "send_packed", send_packed)
    ids = [echo.delay(i).id for i in range(1, 4)]
    assert len(writes) == 3
    assert all(packed.startswith(b"*3\r\n$5\r\nLPUSH\r\n") for packed, _ in writes)
    stored = [json.loads(item)["headers"]["id"] for item in raw.lrange(f"{key_prefix}celery",
                                                                         0, -1)]
    assert stored[:3] == ids[::-1]


def test_a_dropped_connection_is_retried_by_the_publish_policy(app: Celery, raw: redis.Redis,
                                                               key_prefix: str) -> None:
    """The lane's first attempt fails on a socket the server closed; the publish policy's
    retry (the normal publish of the same text) stores it, once."""
    echo = app.tasks["lane.echo"]
    echo.delay(0)
    direct = app.broker._connection()[3]  # type: ignore[attr-defined]
    my_id = direct.execute("CLIENT", "ID")
    assert raw.execute_command("CLIENT", "KILL", "ID", my_id) == 1
    sent = echo.delay(1)
    items = [json.loads(item)["headers"]["id"] for item in raw.lrange(f"{key_prefix}celery",
                                                                        0, -1)]
    assert items.count(sent.id) == 1
    assert direct.execute("CLIENT", "ID") != my_id


def test_without_a_publish_deadline_the_lane_waits_as_configured(app: Celery,
                                                                  raw: redis.Redis,
                                                                  key_prefix: str) -> None:
    """``broker_publish_timeout = None``: no deadline, so the packed write keeps the
    connection's configured read timeout."""
    app.conf.broker_publish_timeout = None
    echo = app.tasks["lane.echo"]
    echo.delay(0)
    task_id = templates.publish_plain(app, echo, (1,), {}, None)
    assert task_id is not None, f"the call did not take the lane: {why_not(app, echo)}"
    direct = app.broker._connection()[3]  # type: ignore[attr-defined]
    conn = direct._connection()
    assert conn._sock.gettimeout() == conn.socket_timeout
    stored = json.loads(raw.lindex(f"{key_prefix}celery", 0))
    assert stored["headers"]["id"] == task_id
