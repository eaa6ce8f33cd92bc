"""When a worker says ready (:mod:`celeriac.worker.readiness`): ``worker_ready`` and
``<hostname> ready.`` once the consumer declared its queues, or after the bound with a
warning naming them and why; a declaration that fails is kept and retried later."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from celeriac import Celery
from celeriac.signals import worker_ready
from celeriac.worker.main import Worker
from celeriac.worker.readiness import Declaration, ReadyGate
from celeryproc import wait_until


def make_worker(hostname: str) -> Worker:
    app = Celery("ready", broker="memory://", backend="memory://", set_as_current=False)
    return Worker(app, hostname=hostname, queues=["alpha", "beta"], pool="threads",
                  concurrency=1, setup_logs=False)


def test_ready_is_said_once_when_declared(capsys: pytest.CaptureFixture[str]) -> None:
    worker = make_worker("d@test")
    declared = [False]
    seen: list[Any] = []

    def receiver(sender: Any = None, **_: Any) -> None:
        seen.append(sender)

    worker_ready.connect(receiver)
    try:
        gate = ReadyGate(worker, lambda: declared[0], lambda: "")
        assert not gate.check() and seen == []
        declared[0] = True
        assert gate.check() and gate.check()
    finally:
        worker_ready.disconnect(receiver)
    assert seen == [worker]
    assert capsys.readouterr().out.count("d@test ready.") == 1


def test_ready_after_the_bound_names_the_queues_and_why(
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    worker = make_worker("late@test")
    seen: list[Any] = []

    def receiver(sender: Any = None, **_: Any) -> None:
        seen.append(sender)

    worker_ready.connect(receiver)
    try:
        gate = ReadyGate(worker, lambda: False, lambda: "OperationalError: refused",
                         wait=0.2)
        with caplog.at_level(logging.WARNING, logger="celeriac.worker"):
            wait_until(gate.check, 10, what="the bound to pass")
    finally:
        worker_ready.disconnect(receiver)
    assert seen == [worker]
    [record] = [r for r in caplog.records if "not declared" in r.getMessage()]
    text = record.getMessage()
    assert "alpha, beta" in text and "OperationalError: refused" in text
    assert "memory://" in text
    assert "late@test ready." in capsys.readouterr().out


def test_declaration_on_a_broker_without_declarations_is_done_at_once() -> None:
    app = Celery("ready", broker="memory://", backend="memory://", set_as_current=False)
    declaration = Declaration(app.broker, ["alpha"])
    done: list[bool] = []
    declaration.on_done = lambda: done.append(True)
    assert declaration.attempt() and declaration.done.is_set() and done == [True]
    assert declaration.attempt() and done == [True]  # once


def test_failed_declaration_keeps_why_and_waits_before_trying_again() -> None:
    pytest.importorskip("amqp")
    from celeriac.brokers.amqp.broker import AMQPBroker

    broker = AMQPBroker("amqp://guest:guest@127.0.0.1:1//",
                        options={"retry_policy": {"max_retries": 0}})
    try:
        declaration = Declaration(broker, ["alpha"])
        reasons: list[str] = []
        declaration.on_failed = reasons.append
        assert not declaration.attempt()
        assert not declaration.done.is_set()
        assert reasons == [declaration.error] and declaration.error
        assert not declaration.attempt() and len(reasons) == 1  # not again within a second
    finally:
        broker.close()
