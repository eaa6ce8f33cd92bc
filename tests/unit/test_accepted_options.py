"""Options celeriac used to accept and ignore (issue 9, point 7), each now working as in
Celery or reported: ``task_compression`` with groups, ``AsyncResult.then``,
``Task.send_event``, ``EncodeError``, ``get(on_interval=)``, task ``routing_key`` /
``exchange`` / ``trail`` / ``pydantic``, ``-A package.module.app``, ``unix://``,
``apply_async(add_to_parent=)``, kombu's publishing options, ``send_task(result_cls=)``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery, Task, group
from celeriac.brokers.redis.client import parse_target
from celeriac.exceptions import EncodeError
from celeriac.exceptions import TimeoutError as ResultTimeout
from celeriac.messages import decode_body
from celeriac.worker.consumer import Consumer
from celeriac.worker.pools import SoloPool
from celeriac.worker.timeouts import timeout_flag
from needs import need


@pytest.fixture
def app() -> Celery:
    return Celery("opts", broker="memory://", backend="memory://", set_as_current=False)


def drain(app: Celery, queue: str = "celery", until: int = 1) -> None:
    """Run what is queued with the worker's own consumer loop until ``until`` finished."""
    consumer = Consumer(app, [queue], SoloPool(), poll_timeout=0.05)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10.0
        while consumer.runner.processed < until and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        consumer.stop()
        thread.join(10)


def test_a_group_publishes_with_task_compression(app: Celery) -> None:
    app.conf.task_compression = "gzip"

    @app.task(name="opts.add")
    def add(x: int, y: int) -> int:
        return x + y

    group(add.s(1, 2), add.s(3, 4), add.s(5, 6)).apply_async()
    got = app.broker.receive(["celery"], owner="t", limit=10)
    assert [decode_body(d.message)[0] for d in got] == [[1, 2], [3, 4], [5, 6]]
    assert {d.message.headers.get("compression") for d in got} == {"application/x-gzip"}


def test_then_calls_back_when_the_result_is_seen_ready(app: Celery) -> None:
    @app.task(name="opts.one")
    def one() -> int:
        return 1

    result = one.delay()
    called: list[Any] = []
    result.then(called.append)
    assert called == []
    drain(app)
    assert result.get(timeout=5) == 1
    assert called == [result]
    later: list[Any] = []
    result.then(later.append)  # already ready: at once
    assert later == [result]
    errors: list[BaseException] = []
    result.then(lambda r: 1 / 0, on_error=errors.append)
    assert isinstance(errors[0], ZeroDivisionError)


def test_send_event_publishes_a_custom_task_event(app: Celery) -> None:
    @app.task(name="opts.ev", bind=True)
    def ev(self: Task) -> None: ...

    with app.broker.broadcast_channel().subscribe("celeryev", ["task.#"]) as events:
        ev.push_request(id="t-1", hostname="w1@h")
        try:
            ev.send_event("task-custom", progress=3)
        finally:
            ev.pop_request()
        [message] = events.get(timeout=2)
    body = json.loads(message.body)
    assert message.routing_key == "task.custom"
    assert (body["type"], body["uuid"], body["hostname"], body["progress"]) == (
        "task-custom", "t-1", "w1@h", 3)


def test_an_unserializable_argument_raises_encode_error(app: Celery) -> None:
    @app.task(name="opts.enc")
    def enc(x: Any) -> None: ...

    with pytest.raises(EncodeError, match=r"args.0. .builtins.object. cannot be sent"):
        enc.delay(object())
    for style in (TypeError, ValueError):
        with pytest.raises(style):
            enc.delay(object())


def test_get_calls_on_interval_while_waiting(app: Celery) -> None:
    ticks: list[int] = []
    with pytest.raises(ResultTimeout):
        app.AsyncResult("never").get(timeout=0.35, interval=0.1,
                                     on_interval=lambda: ticks.append(1))
    assert len(ticks) >= 2
    ticks.clear()
    with pytest.raises(ResultTimeout):
        app.GroupResult("g", [app.AsyncResult("never-2")]).get(
            timeout=0.35, interval=0.1, on_interval=lambda: ticks.append(1))
    assert len(ticks) >= 2


def test_task_routing_key_routes_and_exchange_is_reported(app: Celery) -> None:
    @app.task(name="opts.routed", routing_key="rk-queue")
    def routed() -> None: ...

    routed.delay()
    assert app.broker.stats("rk-queue").ready == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        routed.apply_async(exchange="media")
        routed.apply_async(exchange="media")
    assert len(caught) == 1 and "exchange='media'" in str(caught[0].message)


def test_trail_records_the_children_a_task_sent(app: Celery) -> None:
    @app.task(name="opts.child")
    def child() -> None: ...

    @app.task(name="opts.parent")
    def parent() -> str:
        return child.delay().id

    @app.task(name="opts.untrailed", trail=False)
    def untrailed() -> None:
        child.delay()

    result, quiet = parent.delay(), untrailed.delay()
    drain(app, until=2)
    child_id = result.get(timeout=5)
    assert [c.id for c in app.AsyncResult(result.id).children] == [child_id]
    assert app.AsyncResult(quiet.id).children == []


def test_add_to_parent_false_keeps_a_sent_task_out_of_children(app: Celery) -> None:
    """Celery's ``apply_async(add_to_parent=False)`` (it was accepted and ignored)."""
    @app.task(name="opts.kid")
    def kid() -> None: ...

    @app.task(name="opts.mixed")
    def mixed() -> str:
        kid.apply_async(add_to_parent=False)
        return kid.apply_async(add_to_parent=True).id

    result = mixed.delay()
    drain(app, until=1)
    kept = result.get(timeout=5)
    assert [c.id for c in app.AsyncResult(result.id).children] == [kept]


def test_celery_publishing_options_celeriac_ignores_are_reported(app: Celery) -> None:
    """kombu's producer, AMQP flags and publish timeouts: reported once each, by name,
    and the message is still sent."""
    @app.task(name="opts.flagged")
    def flagged() -> None: ...

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flagged.apply_async(producer=object(), delivery_mode=1, timeout=3)
        flagged.apply_async(producer=object(), mandatory=True)
        flagged.apply_async(publisher=None)  # None: nothing to report
        app.send_task("opts.flagged", confirm_timeout=2, declare=[])
    reported = sorted(str(w.message).split(" (task")[0] for w in caught)
    assert reported == ["apply_async(confirm_timeout=...)", "apply_async(declare=...)",
                        "apply_async(delivery_mode=...)", "apply_async(mandatory=...)",
                        "apply_async(producer=...)", "apply_async(timeout=...)"]
    assert len(app.broker.receive(["celery"], owner="t", limit=10)) == 4
    with pytest.warns(UserWarning, match=r"apply_async option 'countdwon' \(task "
                                         r"opts.flagged\) is unknown and ignored \(did you "
                                         r"mean 'countdown'\?\)"):
        flagged.apply_async(countdwon=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flagged.apply_async(my_own_option=1)  # no known option is close: not reported


def test_send_task_result_cls_is_the_class_of_the_result(app: Celery) -> None:
    from celeriac.result import AsyncResult

    class Mine(AsyncResult):
        pass

    sent = app.send_task("opts.anything", result_cls=Mine)
    assert type(sent) is Mine and sent.id


def test_pydantic_true_validates_and_dumps_models(app: Celery) -> None:
    pydantic = need("pydantic")

    class In(pydantic.BaseModel):  # type: ignore[misc, name-defined]
        x: int

    class Out(pydantic.BaseModel):  # type: ignore[misc, name-defined]
        doubled: int

    seen: list[Any] = []

    def double(arg: In) -> Out:
        seen.append(type(arg))
        return Out(doubled=arg.x * 2)

    double.__annotations__ = {"arg": In, "return": Out}  # real classes, not strings

    task = app.task(double, name="opts.double", pydantic=True)
    result = task.delay(In(x=21))
    [delivery] = app.broker.receive(["celery"], owner="t")
    assert decode_body(delivery.message)[0] == [{"x": 21}]  # plain JSON on the wire
    app.broker.release(delivery)
    drain(app)
    assert result.get(timeout=5) == {"doubled": 42} and seen == [In]


def test_dash_a_accepts_a_dotted_path_ending_in_the_app(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub" / "tasks.py").write_text(textwrap.dedent('''
        from celeriac import Celery
        celery_app = Celery("dotted", broker="memory://")
    '''))
    done = subprocess.run([sys.executable, "-m", "celeriac", "-A", "pkg.sub.tasks.celery_app",
                           "purge", "-f"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr


def test_the_documented_unix_socket_url_is_a_redis_url() -> None:
    need("redis")
    target = parse_target("unix:///run/redis.sock?db=2")
    assert target.url == "unix:///run/redis.sock?db=2"


def test_task_filter_is_applied_to_what_the_decorator_returns(app: Celery) -> None:
    """Celery's ``@app.task(filter=f)`` returns ``f(task)``; the registered task is the
    task itself (``filter`` was accepted and dropped)."""
    seen: list[Any] = []

    def wrap(task: Any) -> tuple[str, Any]:
        seen.append(task)
        return ("wrapped", task)

    @app.task(name="opts.filtered", filter=wrap)
    def filtered() -> None: ...

    direct = app.task(lambda: None, name="opts.filtered2", filter=wrap)
    assert filtered == ("wrapped", app.tasks["opts.filtered"])
    assert direct == ("wrapped", app.tasks["opts.filtered2"]) and len(seen) == 2


def test_run_every_on_a_plain_task_is_reported(app: Celery) -> None:
    with pytest.warns(UserWarning, match=r"run_every= has no effect on a task"):
        @app.task(name="opts.every", run_every=10)
        def every() -> None: ...
    assert "opts.every" in app.tasks and not app.conf.beat_schedule


def test_acks_on_failure_decides_for_failures_as_in_celery_5_7(app: Celery) -> None:
    """``acks_on_failure=False`` dead-letters a failed task's message (Celery rejects it);
    unset, ``acks_on_failure_or_timeout`` decides; set, it wins over it."""
    def failing(name: str, **options: Any) -> Any:
        def fail() -> None:
            raise ValueError(name)
        return app.task(fail, name=f"opts.{name}", **options)

    sent = {name: failing(name, **options).delay().id for name, options in {
        "split": {"acks_on_failure": False},
        "plain": {},
        "old": {"acks_on_failure_or_timeout": False},
        "overridden": {"acks_on_failure_or_timeout": False, "acks_on_failure": True},
    }.items()}
    drain(app, until=4)
    dead = {letter.message.task_id: letter.reason for letter in app.broker.dead_letters()}
    assert set(dead) == {sent["split"], sent["old"]}
    assert dead[sent["split"]].endswith("(acks_on_failure=False)")
    assert dead[sent["old"]].endswith("(acks_on_failure_or_timeout=False)")
    app.conf.task_acks_on_failure = False  # the setting, for tasks that leave it unset
    assert app.tasks["opts.plain"].acks_on_failure is False


@pytest.mark.parametrize("setting", [None, True, False])
@pytest.mark.parametrize("old_setting", [True, False])
@pytest.mark.parametrize("option", [None, True, False])
@pytest.mark.parametrize("old_option", [None, True, False])
def test_acks_on_timeout_resolves_as_celery_5_7(setting: Any, old_setting: bool, option: Any,
                                                old_option: Any) -> None:
    """Whether a timed-out run is acknowledged: the task option, the setting, then
    ``acks_on_failure_or_timeout`` (option, setting), as Celery 5.7's ``Task.bind``; the
    options are taken without a warning (they act: worker/timeouts.py)."""
    celery = pytest.importorskip("celery")
    conf = {"task_acks_on_timeout": setting, "task_acks_on_failure_or_timeout": old_setting}
    options = {k: v for k, v in {"acks_on_timeout": option,
                                 "acks_on_failure_or_timeout": old_option}.items()
               if v is not None}
    theirs = celery.Celery("theirs", set_as_current=False)
    theirs.conf.update(conf)
    def x() -> None: ...

    expected = theirs.task(x, name="t.x", **options).acks_on_timeout
    ours = Celery("ours", broker="memory://", set_as_current=False)
    ours.conf.update(conf)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task = ours.task(x, name="t.x", retry_on_worker_lost=True, **options)
    assert (timeout_flag(task) is None) is expected
    assert task.retry_on_worker_lost is True


def test_a_custom_celery_request_class_is_reported(app: Celery) -> None:
    """Celery's ``Task.Request`` / ``Strategy`` customise its worker internals; celeriac
    has neither, so a task setting one is reported by name."""
    class Custom(Task):
        name = "opts.custom"
        Request = "proj.requests:MyRequest"

        def run(self) -> None: ...

    with pytest.warns(UserWarning, match="task opts.custom: a custom Request has no effect"):
        app.register_task(Custom())
    assert "opts.custom" in app.tasks


def test_a_group_honours_add_to_parent_and_reports_publishing_options(app: Celery) -> None:
    @app.task(name="opts.member")
    def member() -> None: ...

    @app.task(name="opts.fans")
    def fans() -> str:
        group(member.s(), member.s()).apply_async(add_to_parent=False)
        return group(member.s(), member.s()).apply_async().id

    result = fans.delay()
    drain(app, until=1)
    kept = result.get(timeout=5)
    assert [c.id for c in app.AsyncResult(result.id).children] == [kept]
    with pytest.warns(UserWarning, match=r"apply_async\(mandatory=\.\.\.\) \(task group "
                                         r"member\) has no effect"):
        group(member.s(), member.s()).apply_async(mandatory=True)
