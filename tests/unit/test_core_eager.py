"""Eager mode (task_always_eager / task_eager_propagates) as Celery has it, the CommCare
seed test, and ``async def`` tasks run eagerly and through the async producer twins."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest

from celeriac import Celery, Task, shared_task, states
from celeriac.exceptions import Ignore, Reject, RemoteTaskError
from celeriac.result import EagerResult


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("eager", broker="memory://", backend="memory://")
    app.conf.task_always_eager = True
    yield app
    app.close()


def nothing_published(app: Celery) -> bool:
    return all(app.broker.stats(q).ready == 0 for q in app.broker.queues())


def test_delay_runs_at_once_and_publishes_nothing(app: Celery) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(2, 2)
    assert isinstance(result, EagerResult)
    assert result.get(timeout=1) == 4 and result.state == states.SUCCESS
    assert result.successful() and result.ready() and not result.failed()
    assert nothing_published(app)
    assert add.apply_async((1, 1), countdown=60, queue="x").get() == 2


def test_eager_request_fields(app: Celery) -> None:
    @app.task(bind=True)
    def req(self: Task) -> dict[str, Any]:
        r = self.request
        return {"id": r.id, "is_eager": r.is_eager, "called_directly": r.called_directly,
                "root_id": r.root_id, "retries": r.retries, "hostname": r.hostname,
                "delivery_info": r.delivery_info, "headers": r.headers}

    result = req.apply_async(task_id="fixed", headers={"h": 1})
    got = result.get()
    assert got["id"] == "fixed" == result.id == got["root_id"]
    assert got["is_eager"] is True and got["called_directly"] is False
    assert got["retries"] == 0 and got["hostname"]
    assert got["delivery_info"]["is_eager"] is True
    assert got["delivery_info"]["redelivered"] is False
    assert got["headers"] == {"h": 1}


def test_failure_without_propagation(app: Celery) -> None:
    @app.task
    def boom() -> None:
        raise ValueError("v")

    result = boom.delay()
    assert result.state == states.FAILURE and result.failed()
    assert isinstance(result.result, ValueError)
    assert "ValueError: v" in (result.traceback or "")
    with pytest.raises(ValueError):
        result.get()
    assert isinstance(result.get(propagate=False), ValueError)


def test_failure_with_eager_propagates(app: Celery) -> None:
    app.conf.task_eager_propagates = True

    @app.task
    def boom() -> None:
        raise ValueError("v")

    with pytest.raises(ValueError):
        boom.delay()
    assert isinstance(boom.apply(throw=False).result, ValueError)


def test_old_setting_names_drive_eager_mode() -> None:
    app = Celery("old", broker="memory://", backend="memory://", set_as_current=False)
    app.config_from_object({"CELERY_ALWAYS_EAGER": True,
                            "CELERY_EAGER_PROPAGATES_EXCEPTIONS": True})

    @app.task
    def boom() -> None:
        raise KeyError("k")

    with pytest.raises(KeyError):
        boom.delay()


def test_ignore_in_eager_mode(app: Celery) -> None:
    app.conf.task_eager_propagates = True

    @app.task
    def ignored() -> None:
        raise Ignore()

    result = ignored.delay()
    assert isinstance(result.result, Ignore)
    assert result.state == states.IGNORED
    assert not result.successful() and not result.failed()
    assert result.get() is None


def test_reject_in_eager_mode(app: Celery) -> None:
    @app.task(acks_late=True)
    def rejected() -> None:
        raise Reject("no reason", requeue=False)

    result = rejected.delay()
    assert result.state == states.REJECTED
    assert isinstance(result.result, Reject) and result.result.requeue is False


def test_reject_requeue_seed_in_eager_mode(app: Celery) -> None:
    """Tutorial seed: delivery_info['redelivered'] is readable in eager mode too."""
    @app.task(bind=True, acks_late=True)
    def requeues(self: Task) -> str:
        if not self.request.delivery_info["redelivered"]:
            raise Reject("no reason", requeue=True)
        return "received two times"

    result = requeues.delay()
    assert result.state == states.REJECTED and result.result.requeue is True


def test_update_state_in_eager_mode(app: Celery) -> None:
    @app.task(bind=True)
    def progress(self: Task) -> str:
        self.update_state(state="PROGRESS", meta={"done": 50})
        return app.AsyncResult(self.request.id).state

    result = progress.delay()
    assert result.get() == "PROGRESS"
    assert app.AsyncResult(result.id).info == {"done": 50}  # the progress stays readable


def test_store_eager_result(app: Celery) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    assert app.AsyncResult(add.delay(1, 1).id).state == states.PENDING
    app.conf.task_store_eager_result = True
    assert app.AsyncResult(add.delay(1, 1).id).get(timeout=1) == 2


def test_eager_retry_reruns_until_the_limit(app: Celery) -> None:
    runs: list[int] = []

    @app.task(bind=True, max_retries=2)
    def flaky(self: Task) -> str:
        runs.append(self.request.retries)
        if self.request.retries < 2:
            raise self.retry(countdown=60)
        return "ok"

    result = flaky.delay()
    assert runs == [0, 1, 2]
    assert result.get() == "ok"


def test_eager_autoretry(app: Celery) -> None:
    runs: list[int] = []

    @app.task(bind=True, autoretry_for=(ConnectionError,), retry_kwargs={"max_retries": 5},
              retry_backoff=True)
    def refresh_timeline(self: Task, user: str) -> str:
        runs.append(self.request.retries)
        if len(runs) < 3:
            raise ConnectionError("twitter down")
        return f"refreshed {user}"

    assert refresh_timeline.delay("ann").get() == "refreshed ann"
    assert runs == [0, 1, 2]


def test_nested_eager_calls_link_parent(app: Celery) -> None:
    @app.task(bind=True)
    def child(self: Task) -> tuple[Any, Any]:
        return self.request.parent_id, self.request.root_id

    @app.task(bind=True)
    def parent(self: Task) -> tuple[Any, ...]:
        return (self.request.id, *child.delay().get())

    pid, child_parent, child_root = parent.delay().get()
    assert child_parent == pid and child_root == pid


# -- the CommCare seed (000_2c9cd39ae7fcfcae.txt) -------------------------------------------------
def update_task_state(task: Any, state: str, meta: dict[str, Any]) -> None:
    """soil.progress.update_task_state, as CommCare HQ writes it."""
    task.update_state(state=state, meta=meta)


class SomeError(Exception):
    pass


@shared_task
def my_cool_task() -> None:
    try:
        raise SomeError("my uncool errors")
    except SomeError as err:
        errors = [str(err)]
        update_task_state(my_cool_task, states.FAILURE, {"errors": errors})
        raise Ignore()


def test_commcare_ignore_with_patched_update_state(app: Celery) -> None:
    with mock.patch.object(my_cool_task, "update_state") as update_state:
        res = my_cool_task.delay()
        assert isinstance(res.result, Ignore)
        update_state.assert_called_with(state=states.FAILURE,
                                        meta={"errors": ["my uncool errors"]})
    assert not res.successful()


def test_commcare_ignore_without_patch_stores_the_failure_meta(app: Celery) -> None:
    res = my_cool_task.delay()
    assert isinstance(res.result, Ignore)
    stored = app.AsyncResult(res.id)
    assert stored.state == states.FAILURE and stored.failed()
    assert stored.traceback is None
    assert stored.info == {"errors": ["my uncool errors"]}  # the meta, as stored
    with pytest.raises(RemoteTaskError, match="my uncool errors"):
        stored.get(timeout=1)


def test_commcare_option_two_bubbles_up(app: Celery) -> None:
    app.conf.task_eager_propagates = True

    @app.task
    def uncool() -> None:
        raise SomeError("my uncool error")

    with pytest.raises(SomeError):
        uncool.delay()


# -- async def tasks ---------------------------------------------------------------------------
def test_async_task_apply_returns_the_awaited_value(app: Celery) -> None:
    @app.task
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    assert double.apply((21,)).get() == 42
    assert double.delay(4).get() == 8


def test_async_bound_task_sees_its_request(app: Celery) -> None:
    @app.task(bind=True)
    async def who(self: Task) -> Any:
        await asyncio.sleep(0)
        return self.request.id

    result = who.apply()
    assert result.get() == result.id


def test_async_task_failure_in_eager_mode(app: Celery) -> None:
    @app.task
    async def broken() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("async boom")

    result = broken.delay()
    assert result.state == states.FAILURE and isinstance(result.result, RuntimeError)


def test_async_task_called_eagerly_from_running_loop(app: Celery) -> None:
    @app.task
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    async def main() -> int:
        return int(double.delay(5).get())  # sync producer API inside async code

    assert asyncio.run(main()) == 10


def test_delay_async_and_get_async_eager(app: Celery) -> None:
    @app.task
    async def double(x: int) -> int:
        return x * 2

    @app.task
    def triple(x: int) -> int:
        return x * 3

    async def main() -> tuple[int, int]:
        a = await double.delay_async(3)
        b = await triple.delay_async(3)
        return await a.get_async(timeout=1), await b.get_async(timeout=1)

    assert asyncio.run(main()) == (6, 9)


def test_eager_refuses_arguments_a_publish_cannot_serialize(app: Celery) -> None:
    @app.task
    def echo(x: Any) -> Any:
        return x

    app.conf.task_always_eager = False
    with pytest.raises(TypeError, match="not JSON serializable") as published:
        echo.delay(object())
    app.conf.task_always_eager = True
    with pytest.raises(TypeError, match="not JSON serializable") as eager:
        echo.delay(object())
    assert type(eager.value) is type(published.value)
    assert echo.delay({"a": (1, 2)}).get() == {"a": (1, 2)}
    app.conf.task_eager_check_serializable = False  # Celery's behaviour, on request
    marker = object()
    assert echo.delay(marker).get() is marker
