"""Signals a worker sends where Celery sends them (issue 9, point 6), on a real in-process
worker (memory broker, threads pool): ``celeryd_init``, ``celeryd_after_setup``,
``worker_init``, ``import_modules``, ``setup_logging`` (a receiver stops celeriac from
configuring logging), ``after_setup_logger``/``after_setup_task_logger``,
``task_received``, ``task_revoked`` (revoked and expired), ``task_rejected`` (a
message that cannot be decoded), ``task_unknown``, ``heartbeat_sent``; the banner and
the ready line without ``-l``; the eventlet signals warn when connected."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from celeriac import Celery, signals
from celeriac.messages import Message
from celeriac.worker import health
from celeriac.worker.main import Worker, setup_logging
from celeryproc import wait_until


@pytest.fixture
def seen() -> Iterator[dict[str, list[dict[str, Any]]]]:
    names = ["celeryd_init", "celeryd_after_setup", "worker_init", "import_modules",
             "worker_ready", "task_received", "task_revoked", "task_rejected", "task_unknown",
             "heartbeat_sent", "worker_shutdown"]
    got: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    receivers = []
    for name in names:
        def receiver(sender: Any = None, _name: str = name, **kw: Any) -> None:
            got[_name].append({"sender": sender, **kw})
        getattr(signals, name).connect(receiver)
        receivers.append((name, receiver))
    yield got
    for name, receiver in receivers:
        getattr(signals, name).disconnect(receiver)


def test_a_worker_sends_celerys_signals(seen: dict[str, list[dict[str, Any]]],
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(health, "NODE_HEARTBEAT", 0.05)
    app = Celery("sig", broker="memory://", backend="memory://", set_as_current=False)

    @app.task(name="sig.add")
    def add(x: int, y: int) -> int:
        return x + y

    worker = Worker(app, hostname="sig@test", pool="threads", concurrency=1,
                    setup_logs=False)
    thread = threading.Thread(target=worker.start, daemon=True)
    thread.start()
    try:
        wait_until(lambda: seen["worker_ready"], 15.0)
        ok = add.delay(1, 2)
        revoked = app.AsyncResult("revoked-before-it-ran")
        app.control.revoke(revoked.id)
        add.apply_async((2, 2), task_id=revoked.id)
        add.apply_async((3, 3), expires=datetime.now(timezone.utc) - timedelta(seconds=1))
        app.send_task("sig.nobody", (1,))
        app.broker.publish(Message(headers={"task": "sig.add", "id": "garbled"},
                                   properties={"content_type": "application/json",
                                               "content_encoding": "utf-8"},
                                   body=b"{not json"), "celery")
        assert ok.get(timeout=10) == 3
        wait_until(lambda: len(seen["task_revoked"]) == 2 and seen["task_unknown"]
                   and seen["task_rejected"] and seen["heartbeat_sent"], 15.0)
    finally:
        worker.stop()
        thread.join(20)
    assert [e["sender"] for e in seen["celeryd_init"]] == ["sig@test"]
    assert seen["celeryd_init"][0]["instance"] is worker
    assert seen["celeryd_init"][0]["conf"] is app.conf
    assert [e["sender"] for e in seen["celeryd_after_setup"]] == ["sig@test"]
    assert seen["worker_init"] and seen["import_modules"]
    received = [e["request"].id for e in seen["task_received"]]
    assert ok.id in received and revoked.id not in received
    by_expired = {e["expired"]: e for e in seen["task_revoked"]}
    assert by_expired[False]["request"].id == revoked.id
    assert by_expired[False]["sender"] is add and by_expired[False]["terminated"] is False
    assert by_expired[True]["request"].task == "sig.add"
    [unknown] = seen["task_unknown"]
    assert unknown["name"] == "sig.nobody" and unknown["message"].task_name == "sig.nobody"
    [rejected] = seen["task_rejected"]
    assert rejected["message"].task_id == "garbled" and rejected["exc"] is not None
    assert seen["worker_shutdown"]
    out = capsys.readouterr().out
    assert "[tasks]" in out and "sig.add" in out and "sig@test ready." in out


def test_quiet_prints_neither_banner_nor_ready_line(capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    app = Celery("sig", broker="memory://", backend="memory://", set_as_current=False)
    worker = Worker(app, hostname="q@test", pool="threads", concurrency=1, setup_logs=False,
                    quiet=True)
    worker.announce_banner()
    worker.announce_ready()
    assert capsys.readouterr().out == ""


def test_banner_names_an_app_without_a_name_main() -> None:
    """pyramid_celery's ``Celery()`` has no main name: the banner says ``__main__`` (as the
    app's repr and Celery's banner do), not ``None``."""
    app = Celery(broker="memory://", backend="memory://", set_as_current=False)
    worker = Worker(app, hostname="b@test", pool="threads", concurrency=1, setup_logs=False)
    assert "- app: __main__  broker: memory://" in worker.banner()


def test_a_setup_logging_receiver_replaces_celeriacs_logging() -> None:
    app = Celery("sig", broker="memory://", set_as_current=False)
    calls: list[dict[str, Any]] = []
    after: list[str] = []

    def mine(**kw: Any) -> None:
        calls.append(kw)

    def after_logger(logger: logging.Logger, **kw: Any) -> None:
        after.append(logger.name)

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    signals.after_setup_logger.connect(after_logger)
    signals.after_setup_task_logger.connect(after_logger)
    signals.setup_logging.connect(mine)
    try:
        setup_logging(app, "INFO")
        assert root.handlers == handlers and root.level == level  # untouched
        assert calls[0]["loglevel"] == logging.INFO and after == []
        signals.setup_logging.disconnect(mine)
        setup_logging(app, "INFO")
        assert after == ["root", "celery.task"]
    finally:
        signals.setup_logging.disconnect(mine)
        signals.after_setup_logger.disconnect(after_logger)
        signals.after_setup_task_logger.disconnect(after_logger)
        root.handlers[:] = handlers
        root.setLevel(level)


def test_the_eventlet_signals_warn_when_connected() -> None:
    def receiver(**kw: Any) -> None: ...

    with pytest.warns(UserWarning, match="eventlet_pool_started is never sent"):
        signals.eventlet_pool_started.connect(receiver)
    signals.eventlet_pool_started.disconnect(receiver)
