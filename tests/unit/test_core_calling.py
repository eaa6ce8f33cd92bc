"""Calling tasks: delay/apply_async options as they appear in the message, apply(),
signatures, routing, blocking ``get()`` inside a task, argument checks, async twins."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from celeriac import Celery, Task, signature, states
from celeriac.app.trace import Outcome
from celeriac.brokers.base import Delivery
from celeriac.messages import Message
from celeriac.result import AsyncResult, EagerResult
from celeriac.worker.job import JobRunner
from celeriac.worker.leases import LeaseKeeper
from needs import need


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("tasks", broker="memory://", backend="memory://")
    yield app
    app.close()


@pytest.fixture
def add(app: Celery) -> Task:
    @app.task(name="tasks.add")
    def add(x: int, y: int, debug: bool = False) -> int:
        return x + y

    return add


def published(app: Celery, queue: str = "celery", shift: float = 0.0) -> list[Delivery]:
    broker = app.broker
    if shift:
        real = type(broker).now
        broker.now = lambda: real() + shift  # type: ignore[method-assign]
    try:
        return broker.receive([queue], owner="t", limit=100, timeout=0)
    finally:
        broker.__dict__.pop("now", None)


def one(app: Celery, queue: str = "celery", shift: float = 0.0) -> Message:
    [delivery] = published(app, queue, shift)
    return delivery.message


def body(message: Message) -> list[Any]:
    return list(json.loads(message.body))


def work(app: Celery, queue: str = "celery") -> list[Outcome]:
    deliveries = published(app, queue)
    keeper = LeaseKeeper(app.broker, interval=60)
    keeper.hold(deliveries)
    runner = JobRunner(app, keeper, "w@test")
    out = []
    for d in deliveries:
        job = runner.prepare(d, set())
        assert job is not None
        out.append(runner.execute(job))
    return out


# -- delay / apply_async ----------------------------------------------------------------------
def test_delay_publishes_args_and_kwargs(app: Celery, add: Task) -> None:
    result = add.delay(2, 2, debug=True)
    assert isinstance(result, AsyncResult) and result.id
    msg = one(app)
    assert msg.task_name == "tasks.add" and msg.task_id == result.id
    assert body(msg)[:2] == [[2, 2], {"debug": True}]
    assert msg.headers["argsrepr"] == "(2, 2)" and msg.headers["kwargsrepr"] == "{'debug': True}"


def test_apply_async_countdown(app: Celery, add: Task) -> None:
    before = datetime.now(timezone.utc)
    add.apply_async((1, 1), countdown=60)
    assert published(app) == []  # waits in the broker
    msg = one(app, shift=61)
    eta = datetime.fromisoformat(msg.headers["eta"])
    assert timedelta(seconds=59) < eta - before < timedelta(seconds=61)


def test_apply_async_eta_aware_and_naive(app: Celery, add: Task) -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    add.apply_async((1, 1), eta=when)
    assert datetime.fromisoformat(one(app, shift=31).headers["eta"]) == when
    naive = datetime.utcnow() + timedelta(seconds=30)
    add.apply_async((1, 1), eta=naive)
    got = datetime.fromisoformat(one(app, shift=31).headers["eta"])
    assert got == naive.replace(tzinfo=timezone.utc)


def test_apply_async_past_eta_is_ready_now(app: Celery, add: Task) -> None:
    add.apply_async((1, 1), eta=datetime.now(timezone.utc) - timedelta(hours=1))
    assert len(published(app)) == 1


@pytest.mark.parametrize("expires", [120, 120.0, timedelta(seconds=120), "datetime"])
def test_apply_async_expires(app: Celery, add: Task, expires: Any) -> None:
    if expires == "datetime":
        expires = datetime.now(timezone.utc) + timedelta(seconds=120)
    add.apply_async((1, 1), expires=expires)
    msg = one(app)
    left = datetime.fromisoformat(msg.headers["expires"]) - datetime.now(timezone.utc)
    assert timedelta(seconds=115) < left <= timedelta(seconds=120)
    assert 115_000 < int(msg.properties["expiration"]) <= 120_000


def test_expired_task_is_revoked_by_the_worker(app: Celery, add: Task) -> None:
    result = add.apply_async((1, 1), expires=datetime.now(timezone.utc) - timedelta(seconds=1))
    [delivery] = published(app)
    keeper = LeaseKeeper(app.broker, interval=60)
    keeper.hold([delivery])
    assert JobRunner(app, keeper, "w").prepare(delivery, set()) is None
    assert result.state == states.REVOKED


def test_apply_async_queue_priority_task_id(app: Celery, add: Task) -> None:
    result = add.apply_async((1, 1), queue="math", priority=7, task_id="my-id")
    assert result.id == "my-id"
    msg = one(app, "math")
    assert msg.task_id == "my-id" and msg.properties["correlation_id"] == "my-id"
    assert msg.properties["priority"] == 7
    assert msg.properties["delivery_info"] == {"exchange": "", "routing_key": "math"}


def test_apply_async_headers_are_merged_flat(app: Celery, add: Task) -> None:
    add.apply_async((1, 1), headers={"x-tenant": "acme", "trace": [1, 2]})
    headers = one(app).headers
    assert headers["x-tenant"] == "acme" and headers["trace"] == [1, 2]
    assert "headers" not in headers
    assert list(headers)[-2:] == ["x-tenant", "trace"]


def test_apply_async_link_and_link_error(app: Celery, add: Task) -> None:
    add.apply_async((1, 1), link=add.s(10), link_error=[add.si(0, 0), add.s(5)])
    embed = body(one(app))[2]
    assert embed["callbacks"] == [{"task": "tasks.add", "args": [10], "kwargs": {},
                                   "options": {}, "subtask_type": None, "immutable": False}]
    assert [e["immutable"] for e in embed["errbacks"]] == [True, False]
    assert embed["chain"] is None and embed["chord"] is None


def test_link_callback_runs_with_the_result(app: Celery, add: Task) -> None:
    add.apply_async((1, 1), link=add.s(10))
    work(app)
    assert body(one(app))[0] == [2, 10]


def test_apply_async_ignore_result(app: Celery, add: Task) -> None:
    result = add.apply_async((1, 1), ignore_result=True)
    assert one(app).headers["ignore_result"] is True
    add.apply_async((1, 1), ignore_result=True)
    work(app)
    assert result.state == states.PENDING


def test_apply_async_argsrepr_kwargsrepr(app: Celery, add: Task) -> None:
    add.apply_async((2, 3), {"debug": True}, argsrepr="(<secret>, <secret>)",
                    kwargsrepr="{'debug': '***'}")
    headers = one(app).headers
    assert headers["argsrepr"] == "(<secret>, <secret>)"
    assert headers["kwargsrepr"] == "{'debug': '***'}"


def test_signature_set_kwargsrepr(app: Celery, add: Task) -> None:
    add.s(1, 2).set(kwargsrepr=repr({"card": "****"})).delay()
    assert one(app).headers["kwargsrepr"] == "{'card': '****'}"


def test_time_limits_become_the_timelimit_header(app: Celery, add: Task) -> None:
    add.apply_async((1, 1), time_limit=10, soft_time_limit=5)
    assert one(app).headers["timelimit"] == [10, 5]
    add.apply_async((1, 1))
    assert one(app).headers["timelimit"] == [None, None]


def test_task_options_are_message_defaults(app: Celery) -> None:
    @app.task(queue="q1", priority=3, expires=60, time_limit=30, soft_time_limit=20)
    def opt() -> None:
        return None

    opt.delay()
    msg = one(app, "q1")
    assert msg.properties["priority"] == 3
    assert msg.headers["timelimit"] == [30, 20]
    assert msg.headers["expires"] is not None
    opt.apply_async(queue="other", priority=1)
    assert one(app, "other").properties["priority"] == 1


def test_shadow_name(app: Celery, add: Task) -> None:
    add.apply_async((1, 1), shadow="add-for-customer-42")
    assert one(app).headers["shadow"] == "add-for-customer-42"


def test_serializer_option(app: Celery, add: Task) -> None:
    add.apply_async((1, 1), serializer="pickle")
    msg = one(app)
    assert msg.content_type == "application/x-python-serialize"


# -- apply() and signatures ------------------------------------------------------------------------
def test_apply_runs_locally(app: Celery, add: Task) -> None:
    result = add.apply((2, 3))
    assert isinstance(result, EagerResult)
    assert result.get() == 5 and result.state == states.SUCCESS
    assert published(app) == []


def test_signature_repr_like_celery(app: Celery, add: Task) -> None:
    assert repr(add.s(2, 2, debug=True)) == "tasks.add(2, 2, debug=True)"
    assert repr(add.signature((2, 2), {"debug": True})) == "tasks.add(2, 2, debug=True)"
    assert repr(add.signature((2, 2), debug=True)) == "tasks.add(2, 2)"  # debug is an option
    assert repr(add.si(1, "x")) == "tasks.add(1, 'x')"
    assert repr(signature("tasks.add", args=(1,), kwargs={"y": 2})) == "tasks.add(1, y=2)"


def test_signature_matches_celery_repr(app: Celery, add: Task) -> None:
    celery = need("celery")
    capp = celery.Celery("tasks", set_as_current=False)

    @capp.task(name="tasks.add")
    def cadd(x: int, y: int, debug: bool = False) -> int:
        return x + y

    for ours, theirs in [(add.s(2, 2, debug=True), cadd.s(2, 2, debug=True)),
                         (add.signature((2, 2), debug=True), cadd.signature((2, 2), debug=True)),
                         (add.si(1, "x"), cadd.si(1, "x"))]:
        assert repr(ours) == repr(theirs)
        assert json.dumps(dict(ours)) == json.dumps(dict(theirs))


def test_signature_delay_partial_and_immutable(app: Celery, add: Task) -> None:
    add.s(2).delay(3)
    assert body(one(app))[0] == [3, 2]
    add.si(2, 2).delay(3)
    assert body(one(app))[0] == [2, 2]
    assert add.s(1, 1).apply().get() == 2


# -- routing -------------------------------------------------------------------------------------
def _routed_queue(app: Celery, name: str, **options: Any) -> str:
    app.send_task(name, **options)
    for queue in app.broker.queues():
        deliveries = published(app, queue)
        if deliveries:
            [d] = deliveries
            return d.queue
    raise AssertionError("nothing published")


@pytest.mark.parametrize(("routes", "name", "queue"), [
    ({"feed.tasks.import_feed": "feeds"}, "feed.tasks.import_feed", "feeds"),
    ({"feed.tasks.import_feed": {"queue": "feeds"}}, "feed.tasks.import_feed", "feeds"),
    ({"feed.tasks.*": {"queue": "feeds"}}, "feed.tasks.other", "feeds"),
    ({"feed.tasks.*": {"queue": "feeds"}}, "web.tasks.other", "celery"),
    ({re.compile(r"(image|video)\.tasks\..*"): {"queue": "media"}}, "video.tasks.x", "media"),
    ([{"a.*": "qa"}, {"b.*": "qb"}], "b.t", "qb"),
    ([{"a.*": "qa"}, {"a.t": "second"}], "a.t", "qa"),
    (lambda name, args, kwargs, options, task=None, **kw: "fn" if name == "x.y" else None,
     "x.y", "fn"),
    (lambda name, args, kwargs, options, task=None, **kw: {"queue": "fnd"}, "any", "fnd"),
    ([lambda name, *a, **kw: None, {"*": "catch-all"}], "z", "catch-all"),
])
def test_task_routes(app: Celery, routes: Any, name: str, queue: str) -> None:
    app.conf.task_routes = routes
    assert _routed_queue(app, name) == queue


def test_explicit_queue_and_task_queue_beat_routes(app: Celery) -> None:
    app.conf.task_routes = {"*": "routed"}

    @app.task(name="q.attr", queue="attr-queue")
    def attr() -> None:
        return None

    assert _routed_queue(app, "q.any", queue="explicit") == "explicit"
    attr.delay()
    assert published(app, "attr-queue")


def test_task_default_queue(app: Celery, add: Task) -> None:
    app.conf.task_default_queue = "default-q"
    add.delay(1, 1)
    assert published(app, "default-q")


def test_router_receives_task_and_arguments(app: Celery, add: Task) -> None:
    seen: list[tuple[Any, ...]] = []

    def router(name: str, args: Any, kwargs: Any, options: Any, task: Any = None,
               **kw: Any) -> None:
        seen.append((name, list(args), kwargs, task))

    app.conf.task_routes = (router,)
    add.delay(1, 2)
    assert seen == [("tasks.add", [1, 2], {}, add)]


# -- get() inside a task, typing -------------------------------------------------------------------
def test_get_inside_a_task_raises(app: Celery, add: Task) -> None:
    done = app.AsyncResult("done-id")
    app.backend.set("done-id", {"status": states.SUCCESS, "result": 9, "traceback": None,
                                "children": [], "date_done": None, "task_id": "done-id"})

    @app.task(name="waits")
    def waits() -> list[Any]:
        out: list[Any] = []
        try:
            add.delay(1, 1).get(timeout=0.1)
        except RuntimeError as exc:
            out.append(str(exc).splitlines()[0])
        out.append(done.get(timeout=1, disable_sync_subtasks=False))
        return out

    waits.delay()
    [outcome] = work(app)
    assert outcome.retval == ["Never call result.get() within a task!", 9]


def test_get_inside_an_eager_task_is_allowed(app: Celery, add: Task) -> None:
    app.conf.task_always_eager = True

    @app.task
    def outer() -> int:
        return int(add.delay(1, 1).get())

    assert outer.delay().get() == 2


def test_typing_checks_arguments(app: Celery, add: Task) -> None:
    with pytest.raises(TypeError, match=r"tasks\.add"):
        add.delay(1)
    with pytest.raises(TypeError):
        add.apply_async((1, 2), {"nope": 3})
    with pytest.raises(TypeError):
        add.s(1, 2, 3, 4).delay()
    assert published(app) == []

    @app.task(typing=False)
    def loose(x: int) -> int:
        return x

    loose.delay(1, 2, 3)
    assert len(published(app)) == 1


def test_typing_with_bound_task(app: Celery) -> None:
    @app.task(bind=True)
    def bound(self: Task, x: int) -> int:
        return x

    bound.delay(1)
    with pytest.raises(TypeError):
        bound.delay()


# -- async twins ------------------------------------------------------------------------------
def test_delay_async_and_get_async(app: Celery, add: Task) -> None:
    async def main() -> int:
        result = await add.delay_async(20, 22)
        worker = threading.Thread(target=work, args=(app,))
        worker.start()
        value = await result.get_async(timeout=5)
        worker.join()
        return int(value)

    assert asyncio.run(main()) == 42


def test_apply_async_async_passes_options(app: Celery, add: Task) -> None:
    async def main() -> AsyncResult:
        return await add.apply_async_async((1, 2), queue="aq", countdown=0)

    result = asyncio.run(main())
    assert one(app, "aq").task_id == result.id


def test_publish_signals_see_body_and_can_add_headers(app: Celery, add: Task) -> None:
    from celeriac.signals import after_task_publish, before_task_publish

    seen: list[Any] = []

    def before(sender: str, body: Any, headers: dict[str, Any], **kw: Any) -> None:
        headers["traceparent"] = "00-abc-01"
        seen.append((sender, body[0], body[1], kw["routing_key"]))

    def after(sender: str, headers: dict[str, Any], **kw: Any) -> None:
        seen.append(("after", headers["id"]))

    before_task_publish.connect(before)
    after_task_publish.connect(after)
    try:
        result = add.apply_async((1, 2), queue="sig")
    finally:
        before_task_publish.disconnect(before)
        after_task_publish.disconnect(after)
    assert seen == [("tasks.add", [1, 2], {}, "sig"), ("after", result.id)]
    assert one(app, "sig").headers["traceparent"] == "00-abc-01"


def test_countdown_zero_sends_no_eta(app: Celery, add: Task) -> None:
    add.apply_async((1, 1), countdown=0)
    assert one(app).headers["eta"] is None


def test_signal_sender_filter_by_task_name(app: Celery, add: Task) -> None:
    from celeriac.signals import after_task_publish

    seen: list[str] = []

    def only_add(sender: str, headers: dict[str, Any], **kw: Any) -> None:
        seen.append(headers["task"])

    name = "".join(["tasks.", "add"])  # an equal string, not the same object
    after_task_publish.connect(only_add, sender=name)
    try:
        add.delay(1, 1)
        app.send_task("tasks.other")
    finally:
        after_task_publish.disconnect(only_add)
    assert seen == ["tasks.add"]


def test_compression_option_and_setting(app: Celery, add: Task) -> None:
    from celeriac.app.request import parse_request
    from celeriac.serialization import accepted_types

    add.apply_async((1, 2), compression="gzip")
    msg = one(app)
    assert msg.headers["compression"] == "application/x-gzip"
    assert parse_request(msg, accepted_types(["json"])).args == [1, 2]
    app.conf.task_compression = "bzip2"
    add.delay(1, 2)
    assert one(app).headers["compression"] == "application/x-bz2"


def test_compressed_task_runs_and_retries(app: Celery) -> None:
    runs: list[int] = []

    @app.task(bind=True, compression="zlib")
    def squeezed(self: Task, x: int) -> int:
        runs.append(self.request.retries)
        if not self.request.retries:
            raise self.retry(countdown=0.01)
        return x

    result = squeezed.delay(3)
    work(app)
    time.sleep(0.05)
    [outcome] = work(app)
    assert outcome.retval == 3 and runs == [0, 1]
    assert result.get(timeout=1) == 3


def test_naive_eta_is_in_the_app_time_zone(app: Celery, add: Task) -> None:
    from zoneinfo import ZoneInfo

    app.conf.timezone = "Asia/Tokyo"
    naive = datetime.now(ZoneInfo("Asia/Tokyo")).replace(tzinfo=None) + timedelta(seconds=30)
    add.apply_async((1, 1), eta=naive)
    eta = datetime.fromisoformat(one(app, shift=31).headers["eta"])
    assert eta.utcoffset() == timedelta(hours=9)
    assert timedelta(seconds=25) < eta - datetime.now(timezone.utc) <= timedelta(seconds=30)
