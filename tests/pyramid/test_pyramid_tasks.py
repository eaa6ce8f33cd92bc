"""The task bases and enqueue-on-commit in one process: a Pyramid app built here, the memory
broker, WebTest requests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pyramidsite import require_pyramid


@pytest.fixture
def env() -> Iterator[dict[str, Any]]:
    require_pyramid()
    import transaction
    import webtest
    from pyramid.config import Configurator

    from celeriac import Celery
    from celeriac.contrib.pyramid import RequestAwareTask, TransactionalTask, includeme

    app = Celery(f"pyr{uuid.uuid4().hex[:6]}", broker="memory://", set_as_current=False)
    seen: list[Any] = []

    @app.task(base=RequestAwareTask)
    def aware(request: Any, n: int) -> Any:
        seen.append((n, request.registry.settings.get("marker"), request.tm))
        return n

    @app.task(base=TransactionalTask)
    def transactional(request: Any, n: int) -> Any:
        seen.append((n, request.tm.get().status))
        return n

    @app.task
    def plain(x: Any) -> Any:
        return x

    @app.task(on_commit=False)
    def urgent(x: Any) -> Any:
        return x

    def send(request: Any) -> Any:
        kind = request.params["kind"]
        if kind == "request-first":
            aware.apply_async(args=(request, 1))
        elif kind == "now":
            aware.apply_async(args=(request, 2), on_commit=False)
            request.response.headers["X-Queued"] = str(len(_queued(app, peek=True)))
        elif kind == "urgent":
            urgent.delay(3)
            plain.delay_on_commit(4)
            request.response.headers["X-Queued"] = str(len(_queued(app, peek=True)))
        elif kind == "bad-argument":
            plain.delay(request)
        if request.params.get("abort"):
            request.tm.doom()
        return {"ok": True}

    settings = {"marker": "m1", "tm.manager_hook": "pyramid_tm.explicit_manager"}
    with Configurator(settings=settings) as config:
        config.include("pyramid_tm")
        includeme(config, app=app)
        config.add_route("send", "/send")
        config.add_route("review", "/review/{id}")
        config.add_view(send, route_name="send", renderer="json")
        wsgi = config.make_wsgi_app()
    yield {"app": app, "web": webtest.TestApp(wsgi), "seen": seen, "aware": aware,
           "transactional": transactional, "plain": plain, "registry": config.registry,
           "transaction": transaction}
    app.close()


def _queued(app: Any, peek: bool = False) -> list[Any]:
    stats = app.broker.stats("celery")
    if peek:
        return [None] * (stats.ready + stats.delayed)
    got = app.broker.receive(["celery"], owner="t", limit=100, timeout=0)
    return [d.message for d in got]


def test_request_first_argument_is_dropped_and_sent_after_commit(env: dict[str, Any]) -> None:
    env["web"].get("/send", {"kind": "request-first"})
    (message,) = _queued(env["app"])
    assert message.task_name.endswith("aware")
    from celeriac.messages import decode_body

    assert decode_body(message)[0] == [1]


def test_on_commit_false_and_task_option_send_at_once(env: dict[str, Any]) -> None:
    response = env["web"].get("/send", {"kind": "now", "abort": "1"})
    assert response.headers["X-Queued"] == "1"  # already in the broker during the view
    assert len(_queued(env["app"])) == 1        # and kept although the request aborted
    response = env["web"].get("/send", {"kind": "urgent", "abort": "1"})
    assert response.headers["X-Queued"] == "1"  # urgent (on_commit=False) went at once
    names = [m.task_name for m in _queued(env["app"])]
    assert len(names) == 1 and names[0].endswith("urgent")  # delay_on_commit: aborted


def test_not_serializable_argument_is_named(env: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match=r"plain: args\[0\] \(pyramid\.request\.Request\) "
                                        r"cannot be sent with the 'json' serializer"):
        env["web"].get("/send", {"kind": "bad-argument"})


def test_worker_side_request_and_transaction(env: dict[str, Any]) -> None:
    app = env["app"]
    app.conf.task_always_eager = True  # the tracer the worker uses, in this process
    assert env["aware"].delay(5).get() == 5
    assert env["transactional"].delay(6).get() == 6
    (n1, marker, tm), (n2, status) = env["seen"]
    assert (n1, marker, n2, status) == (5, "m1", 6, "Active")
    assert tm.explicit and tm._txn is None  # RequestAwareTask: no transaction opened


def test_arguments_checked_without_the_request(env: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match=r"too many positional arguments"):
        env["aware"].delay(1, 2)


def test_urls_need_app_url(env: dict[str, Any]) -> None:
    from pyramid.exceptions import ConfigurationError

    from celeriac.contrib.pyramid.request import task_request

    registry = env["registry"]
    with task_request(registry) as request:
        assert request.route_path("review", id=3) == "/review/3"
        with pytest.raises(ConfigurationError, match=r"app\.url = https://your\.site"):
            request.route_url("review", id=3)
    registry.settings["app.url"] = "https://shop.example.com/base/"
    with task_request(registry) as request:
        assert request.route_url("review", id=3) == "https://shop.example.com/base/review/3"


def test_async_bodies_are_refused(env: dict[str, Any]) -> None:
    from celeriac.contrib.pyramid import TransactionalTask

    with pytest.raises(TypeError, match="plain def"):
        @env["app"].task(base=TransactionalTask)
        async def coroutine_task(request: Any) -> None:
            return None
