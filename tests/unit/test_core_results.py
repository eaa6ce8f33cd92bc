"""Results: AsyncResult API, states, custom states, expiry, and the exception-safety rule
(never import a module named in a result; unknown types become RemoteTaskError)."""

from __future__ import annotations

import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery, states
from celeriac.exceptions import (
    ImproperlyConfigured,
    MaxRetriesExceededError,
    RemoteTaskError,
    TaskRevokedError,
    TimeoutError,
)
from celeriac.result import AsyncResult
from celeriac.results.meta import build_meta, exception_from_dict, exception_to_dict


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("results", broker="memory://", backend="memory://")
    yield app
    app.close()


def store(app: Celery, task_id: str, status: str, result: Any, **extra: Any) -> None:
    meta = {"status": status, "result": result, "traceback": extra.pop("traceback", None),
            "children": [], "date_done": extra.pop("date_done", None), "task_id": task_id}
    meta.update(extra)
    app.backend.set(task_id, meta)


def failure(exc_type: str, exc_module: str | None, *message: Any) -> dict[str, Any]:
    return {"exc_type": exc_type, "exc_message": list(message), "exc_module": exc_module}


# -- AsyncResult basics ---------------------------------------------------------------------
def test_unknown_id_is_pending(app: Celery) -> None:
    r = app.AsyncResult("never-sent")
    assert (r.id, r.state, r.status, r.result, r.info) == ("never-sent", "PENDING", "PENDING",
                                                           None, None)
    assert not r.ready() and not r.successful() and not r.failed()
    assert r.traceback is None and r.date_done is None
    assert str(r) == "never-sent" and repr(r) == "<AsyncResult: never-sent>"
    assert r == "never-sent" and r == AsyncResult("never-sent", app=app)
    with pytest.raises(ValueError):
        AsyncResult(None, app=app)  # type: ignore[arg-type]


def test_success(app: Celery) -> None:
    store(app, "ok", states.SUCCESS, {"v": [1, 2]}, date_done="2026-11-21T13:36:40.118348+00:00")
    r = app.AsyncResult("ok")
    assert r.state == states.SUCCESS and r.result == {"v": [1, 2]}
    assert r.ready() and r.successful() and not r.failed()
    assert r.get(timeout=1) == {"v": [1, 2]}
    assert r.date_done == datetime.fromisoformat("2026-11-21T13:36:40.118348+00:00")


def test_failure_get_propagate_and_traceback(app: Celery) -> None:
    store(app, "bad", states.FAILURE, failure("ValueError", "builtins", "boom"),
          traceback="Traceback (most recent call last):\nValueError: boom\n")
    r = app.AsyncResult("bad")
    assert r.failed() and r.ready() and not r.successful()
    assert isinstance(r.result, ValueError) and r.result.args == ("boom",)
    assert "ValueError: boom" in (r.traceback or "")
    with pytest.raises(ValueError, match="boom"):
        r.get(timeout=1)
    got = r.get(timeout=1, propagate=False)
    assert isinstance(got, ValueError)


def test_get_timeout_and_interval(app: Celery) -> None:
    r = app.AsyncResult("slow")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        r.get(timeout=0.2, interval=0.05)
    assert 0.15 < time.monotonic() - started < 2


def test_get_waits_for_a_result_stored_later(app: Celery) -> None:
    import threading

    timer = threading.Timer(0.1, store, (app, "later", states.SUCCESS, 5))
    timer.start()
    assert app.AsyncResult("later").get(timeout=5, interval=0.01) == 5
    timer.join()


def test_get_callback_and_on_message(app: Celery) -> None:
    store(app, "cb", states.SUCCESS, 3)
    seen: list[Any] = []
    app.AsyncResult("cb").get(callback=lambda tid, v: seen.append((tid, v)),
                              on_message=lambda meta: seen.append(meta["status"]))
    assert seen == [states.SUCCESS, ("cb", 3)]


def test_revoked_state_raises_task_revoked(app: Celery) -> None:
    r = app.AsyncResult("rv")
    r.revoke()
    assert r.state == states.REVOKED and r.ready()
    with pytest.raises(TaskRevokedError):
        r.get(timeout=1)


def test_revoke_never_overwrites_a_success(app: Celery) -> None:
    store(app, "done", states.SUCCESS, 1)
    app.AsyncResult("done").revoke()
    assert app.AsyncResult("done").state == states.SUCCESS


def test_retry_state_result_is_the_exception(app: Celery) -> None:
    store(app, "rt", states.RETRY, failure("RuntimeError", "builtins", "x"))
    r = app.AsyncResult("rt")
    assert r.state == states.RETRY and not r.ready()
    assert isinstance(r.result, RuntimeError)


def test_started_and_custom_states(app: Celery) -> None:
    store(app, "st", states.STARTED, {"pid": 1, "hostname": "w"})
    assert app.AsyncResult("st").info == {"pid": 1, "hostname": "w"}
    store(app, "pr", "PROGRESS", {"done": 3, "total": 10})
    r = app.AsyncResult("pr")
    assert r.state == "PROGRESS" and r.info == {"done": 3, "total": 10} and not r.ready()
    assert {"PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE",
                                 "RETRY", "REVOKED"} <= states.ALL_STATES
    assert {"SUCCESS", "FAILURE", "REVOKED"} == states.READY_STATES
    assert {"FAILURE", "REVOKED"} == states.PROPAGATE_STATES


def test_state_precedence_like_celery() -> None:
    assert states.state(states.SUCCESS) > states.state(states.PENDING)
    assert states.state("PROGRESS") > states.state(states.STARTED)
    assert states.state(states.PENDING) < states.state(states.FAILURE)


def test_forget(app: Celery) -> None:
    store(app, "f", states.SUCCESS, 1)
    r = app.AsyncResult("f")
    assert r.get() == 1
    r.forget()
    assert r.state == states.PENDING
    assert app.AsyncResult("f").state == states.PENDING


def test_ready_result_is_cached(app: Celery) -> None:
    store(app, "c", states.SUCCESS, 1)
    r = app.AsyncResult("c")
    assert r.get() == 1
    app.backend.delete("c")
    assert r.state == states.SUCCESS  # a ready result does not change any more


def test_result_extended_fields(app: Celery) -> None:
    app.conf.result_extended = True

    @app.task(name="ext.add")
    def add(x: int, y: int) -> int:
        return x + y

    app.conf.task_always_eager = True
    app.conf.task_store_eager_result = True
    r = add.delay(1, 2)
    stored = app.AsyncResult(r.id)
    assert stored.get() == 3
    assert (stored.name, stored.args, stored.kwargs, stored.retries) == ("ext.add", [1, 2], {}, 0)


def test_result_expires(app: Celery) -> None:
    app.conf.result_expires = 0.2

    @app.task
    def quick() -> int:
        return 1

    app.conf.task_always_eager = True
    app.conf.task_store_eager_result = True
    r = quick.delay()
    assert app.AsyncResult(r.id).state == states.SUCCESS
    time.sleep(0.35)
    assert app.AsyncResult(r.id).state == states.PENDING


def test_no_backend_is_a_clear_error() -> None:
    app = Celery("nob", broker="redis://127.0.0.1:1/0", set_as_current=False)
    with pytest.raises(ImproperlyConfigured, match="result backend"):
        _ = app.AsyncResult("x").state


def test_stored_meta_matches_celery_format(app: Celery) -> None:
    meta = build_meta("tid", ValueError("v"), states.FAILURE, traceback="tb")
    assert list(meta) == ["status", "result", "traceback", "children", "date_done", "task_id"]
    assert meta["result"] == {"exc_type": "ValueError", "exc_message": ["v"],
                              "exc_module": "builtins"}
    assert datetime.fromisoformat(meta["date_done"]).utcoffset() is not None
    progress = build_meta("tid", {"done": 0}, "PROGRESS")
    assert progress["date_done"] is None and progress["result"] == {"done": 0}


def test_celery_exceptions_are_stored_under_celery_module() -> None:
    data = exception_to_dict(MaxRetriesExceededError("too many"))
    assert data == {"exc_type": "MaxRetriesExceededError", "exc_message": ["too many"],
                    "exc_module": "celery.exceptions"}
    assert isinstance(exception_from_dict(data), MaxRetriesExceededError)


def test_unserializable_exception_args_become_text() -> None:
    data = exception_to_dict(ValueError(object))
    assert data["exc_message"] == [str(ValueError(object))]


# -- the exception-safety rule ----------------------------------------------------------------
def test_builtin_exceptions_are_rebuilt_as_their_type() -> None:
    for name, cls in [("KeyError", KeyError), ("ZeroDivisionError", ZeroDivisionError),
                      ("OSError", OSError)]:
        exc = exception_from_dict(failure(name, "builtins", "m"))
        assert type(exc) is cls


def test_non_exception_builtins_are_not_used() -> None:
    for name in ("SystemExit", "KeyboardInterrupt", "eval", "print", "object", "type"):
        exc = exception_from_dict(failure(name, "builtins", "m"))
        assert isinstance(exc, RemoteTaskError) and exc.exc_type == name


def test_os_system_becomes_remote_task_error() -> None:
    exc = exception_from_dict(failure("system", "os", "rm -rf /"))
    assert isinstance(exc, RemoteTaskError)
    assert exc.exc_type == "system" and exc.exc_module == "os"
    assert exc.args == ("rm -rf /",)
    assert "os.system" in str(exc) and "rm -rf /" in str(exc)


def test_get_raises_remote_task_error_for_unknown_types(app: Celery) -> None:
    store(app, "evil", states.FAILURE, failure("system", "os", "id"))
    with pytest.raises(RemoteTaskError) as info:
        app.AsyncResult("evil").get(timeout=1)
    assert info.value.exc_type == "system"


def test_forged_module_is_never_imported(app: Celery) -> None:
    module = "http.server" if "http.server" not in sys.modules else "xmlrpc.server"
    assert module not in sys.modules
    store(app, "forged", states.FAILURE, failure("HTTPServer", module, "x"))
    r = app.AsyncResult("forged")
    assert isinstance(r.result, RemoteTaskError)
    with pytest.raises(RemoteTaskError):
        r.get(timeout=1)
    assert module not in sys.modules


def test_planted_module_named_in_a_result_is_not_imported(app: Celery, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A module on sys.path that would record its import is named in a FAILURE result."""
    name = f"planted_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "imported.txt"
    (tmp_path / f"{name}.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\nclass Boom(Exception):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    store(app, "planted", states.FAILURE, failure("Boom", name, "x"))
    with pytest.raises(RemoteTaskError):
        app.AsyncResult("planted").get(timeout=1)
    assert name not in sys.modules
    assert not marker.exists()


@pytest.fixture
def task_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"exc_tasks_{uuid.uuid4().hex[:8]}"
    errors = f"{name}_errors"
    (tmp_path / f"{errors}.py").write_text(textwrap.dedent("""
        class PaymentError(Exception):
            pass
    """))
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(f"""
        from celeriac import shared_task
        from {errors} import PaymentError


        class CardDeclined(Exception):
            pass


        class NotAnException:
            def __init__(self, *args):
                raise AssertionError("must never be called")


        class Outer:
            class Inner(Exception):
                pass


        @shared_task
        def charge():
            raise CardDeclined("declined")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for mod in (name, errors):
        sys.modules.pop(mod, None)


def test_exceptions_from_registered_task_modules_keep_their_type(app: Celery,
                                                                 task_module: str) -> None:
    __import__(task_module)
    module = sys.modules[task_module]
    errors = f"{task_module}_errors"
    own = exception_from_dict(failure("CardDeclined", task_module, "d"), app)
    assert type(own) is module.CardDeclined and own.args == ("d",)
    imported = exception_from_dict(failure("PaymentError", errors, "p"), app)
    assert type(imported) is module.PaymentError
    nested = exception_from_dict(failure("Outer.Inner", task_module, "n"), app)
    assert type(nested) is module.Outer.Inner
    not_exc = exception_from_dict(failure("NotAnException", task_module), app)
    assert isinstance(not_exc, RemoteTaskError)
    wrong_module = exception_from_dict(failure("CardDeclined", "somewhere.else"), app)
    assert isinstance(wrong_module, RemoteTaskError)
    private = exception_from_dict(failure("__class__", task_module), app)
    assert isinstance(private, RemoteTaskError)


def test_task_failure_roundtrip_keeps_type(app: Celery, task_module: str) -> None:
    __import__(task_module)
    app.conf.update(task_always_eager=True, task_store_eager_result=True)
    result = app.tasks[f"{task_module}.charge"].delay()
    stored = app.AsyncResult(result.id)
    assert type(stored.result).__name__ == "CardDeclined"
    assert type(stored.result) is sys.modules[task_module].CardDeclined


def test_exception_of_an_unregistered_module_is_remote(app: Celery) -> None:
    # ``json`` is imported, but no registered task lives there
    exc = exception_from_dict(failure("JSONDecodeError", "json.decoder", "m", "d", 0), app)
    assert isinstance(exc, RemoteTaskError)


def test_exception_with_incompatible_args_is_remote() -> None:
    exc = exception_from_dict(failure("UnicodeDecodeError", "builtins", "only one"))
    assert isinstance(exc, RemoteTaskError) and exc.exc_type == "UnicodeDecodeError"


def test_remote_task_error_roundtrips_through_storage() -> None:
    exc = exception_from_dict(failure("Weird", "far.away", "m"))
    assert exception_to_dict(exc) == failure("Weird", "far.away", "m")


def test_malformed_failure_meta_is_remote() -> None:
    assert isinstance(exception_from_dict("just text"), RemoteTaskError)
    assert isinstance(exception_from_dict({"exc_type": "ValueError", "exc_message": "plain",
                                           "exc_module": "builtins"}), ValueError)


def test_get_async_waits_times_out_and_propagates(app: Celery) -> None:
    import asyncio

    async def main() -> list[Any]:
        out: list[Any] = []
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, store, app, "aio-ok", states.SUCCESS, 7)
        out.append(await app.AsyncResult("aio-ok").get_async(timeout=5, interval=0.01))
        try:
            await app.AsyncResult("aio-never").get_async(timeout=0.1)
        except TimeoutError:
            out.append("timeout")
        store(app, "aio-bad", states.FAILURE, failure("KeyError", "builtins", "k"))
        try:
            await app.AsyncResult("aio-bad").get_async(timeout=1)
        except KeyError:
            out.append("raised")
        out.append(type(await app.AsyncResult("aio-bad").get_async(propagate=False)).__name__)
        waiter = asyncio.ensure_future(app.AsyncResult("aio-cancel").get_async())
        await asyncio.sleep(0.02)
        waiter.cancel()
        try:
            await waiter
        except asyncio.CancelledError:
            out.append("cancelled")
        return out

    assert asyncio.run(main()) == [7, "timeout", "raised", "KeyError", "cancelled"]
