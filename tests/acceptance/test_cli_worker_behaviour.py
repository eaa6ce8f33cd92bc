"""Acceptance: worker behaviour and CLI error reporting, through real processes."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from workerproc import Project, project_fixture, read_lines, wait_until

from celeriac.messages import Message

PROJ = """
    import time
    from pathlib import Path

    from celeriac import Celery

    app = Celery("proj")
    HERE = Path(__file__).parent


    @app.task
    def add(x, y):
        return x + y


    @app.task
    def slow(seconds):
        (HERE / "slow-started").write_text("started")
        time.sleep(seconds)
        (HERE / "slow-finished").write_text("finished")
        return "done"
"""


proj = project_fixture(PROJ)


def _assert_clean_error(result: object, *needles: str) -> None:
    stderr = getattr(result, "stderr", "")
    assert getattr(result, "returncode", 0) == 1, stderr
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("Error: "), stderr
    for needle in needles:
        assert needle in last, f"{needle!r} not in {last!r}"


# -- errors: one clear line, exit status 1, no traceback ----------------------------------

def test_unknown_app_module(proj: Project) -> None:
    shown = proj.raw_cli("-A", "no_such_module", "call", "proj.add")
    _assert_clean_error(shown, "no_such_module")


def test_bad_json_in_args(proj: Project) -> None:
    shown = proj.cli("call", "proj.add", "--args", "[2,")
    # click reports bad parameter values as usage errors (status 2)
    assert shown.returncode in (1, 2), shown.stderr
    assert "Traceback" not in shown.stderr
    assert "--args" in shown.stderr and "JSON" in shown.stderr


def test_args_must_be_a_list(proj: Project) -> None:
    shown = proj.cli("call", "proj.add", "--args", '{"x": 1}')
    assert shown.returncode in (1, 2), shown.stderr
    assert "Traceback" not in shown.stderr
    assert "--args" in shown.stderr


def test_unreachable_broker_on_call(proj: Project) -> None:
    shown = proj.cli("-b", "redis://127.0.0.1:1/0", "call", "proj.add", "--args", "[2,2]")
    _assert_clean_error(shown, "127.0.0.1:1")


def test_unreachable_broker_on_purge(proj: Project) -> None:
    shown = proj.cli("-b", "redis://127.0.0.1:1/0", "purge", "-f")
    _assert_clean_error(shown, "127.0.0.1:1")


def test_unsupported_broker_scheme_names_the_setting(proj: Project) -> None:
    shown = proj.cli("-b", "nosuch://localhost", "call", "proj.add")
    _assert_clean_error(shown, "broker_url", "nosuch")


def test_unreachable_broker_on_worker(proj: Project) -> None:
    # the worker gives up after its startup retries (it does not wait for the broker
    # forever); how long a process takes to start is not what this checks
    shown = proj.cli("-b", "redis://127.0.0.1:1/0", "worker", "-P", "threads")
    _assert_clean_error(shown, "127.0.0.1:1", "failed after 4 attempts")


# -- poison messages -----------------------------------------------------------------------

def _raw_insert(db_path: Path, queue: str, envelope: str) -> None:
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("INSERT INTO messages (queue, priority, envelope, published_at)"
                     " VALUES (?, 0, ?, ?)", (queue, envelope, time.time()))
    conn.close()


def test_malformed_body_is_dead_lettered_and_the_worker_carries_on(proj: Project) -> None:
    broker = proj.app.broker
    bad_body = Message(headers={"task": "proj.add", "id": "bad-body-1", "lang": "py"},
                       properties={"correlation_id": "bad-body-1"},
                       body=json.dumps([[2, 2], {}]).encode())
    not_json = Message(headers={"task": "proj.add", "id": "not-json-1", "lang": "py"},
                       properties={"correlation_id": "not-json-1"}, body=b"this is not json")
    broker.publish(bad_body, "celery")
    broker.publish(not_json, "celery")
    unknown = proj.app.send_task("proj.no_such_task", (1,))

    with proj.worker() as worker:
        good = proj.client().add.delay(2, 2)
        assert good.get(timeout=30) == 4
        def three_dead() -> list[Any]:
            found = broker.dead_letters("celery")
            return found if len(found) >= 3 else []

        dead = wait_until(three_dead, what="3 dead letters")
        assert worker.alive()

    reasons = {d.message.task_id: d.reason for d in dead}
    assert reasons["bad-body-1"].startswith("decode_error"), reasons
    assert reasons["not-json-1"].startswith("decode_error"), reasons
    assert reasons[unknown.id].startswith("unregistered"), reasons
    assert broker.stats("celery").ready == 0


def test_undecodable_envelope_in_the_table_is_dead_lettered(proj: Project) -> None:
    proj.app.broker.stats("celery")  # creates the schema
    _raw_insert(proj.db_path, "celery", "{this is not a JSON envelope")
    with proj.worker() as worker:
        good = proj.client().add.delay(1, 2)
        assert good.get(timeout=30) == 3
        dead = wait_until(lambda: proj.app.broker.dead_letters("celery"), timeout=30,
                          what="the dead letter")
        assert worker.alive()
    assert "decode" in dead[0].reason


# -- shutdown -----------------------------------------------------------------------------

@pytest.mark.parametrize("pool", ["threads", "solo", "prefork"])
def test_sigterm_lets_the_running_task_finish(proj: Project, pool: str) -> None:
    with proj.worker(pool=pool) as worker:
        res = proj.client().slow.delay(2.0)
        wait_until(lambda: (proj.path / "slow-started").exists(), what="the task to start")
        code = worker.stop()
    assert code == 0, worker.log
    assert read_lines(proj.path / "slow-finished") == ["finished"]
    assert res.state == "SUCCESS"
    assert res.get(timeout=5) == "done"
    assert proj.app.broker.stats("celery").leased == 0
    assert "Traceback" not in worker.log


def test_sigterm_gives_back_messages_that_did_not_start(proj: Project) -> None:
    with proj.worker(concurrency=1) as worker:
        first = proj.client().slow.delay(2.0)
        wait_until(lambda: (proj.path / "slow-started").exists(), what="the task to start")
        waiting = proj.client().add.delay(5, 5)
        time.sleep(0.3)
        assert worker.stop() == 0, worker.log
    assert first.get(timeout=5) == "done"
    assert waiting.state == "PENDING"
    assert proj.app.broker.stats("celery").ready == 1
    with proj.worker():
        assert waiting.get(timeout=30) == 10
