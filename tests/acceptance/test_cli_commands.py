"""Acceptance: ``celeriac call/result/purge`` and ``--help`` through real processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from workerproc import Project, project, project_fixture, wait_until

PROJ = """
    import time

    from celeriac import Celery

    app = Celery("proj")


    @app.task
    def add(x, y):
        return x + y


    @app.task
    def now():
        return time.time()
"""


proj = project_fixture(PROJ)


def _task_id(out: str) -> str:
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    task_id = lines[0].strip()
    assert len(task_id) == 36 and task_id.count("-") == 4, task_id
    return task_id


def test_call_prints_an_id_and_result_prints_the_value(proj: Project) -> None:
    with proj.worker():
        sent = proj.cli("call", "proj.add", "--args", "[2,2]")
        assert sent.returncode == 0, sent.stderr
        task_id = _task_id(sent.stdout)
        assert proj.app.AsyncResult(task_id).get(timeout=30) == 4
        shown = proj.cli("result", task_id)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "4"


def test_call_with_kwargs_and_result_waits_with_timeout(proj: Project) -> None:
    with proj.worker():
        task_id = _task_id(proj.cli("call", "proj.add", "--kwargs", '{"x": 3, "y": 4}').stdout)
        shown = proj.cli("result", task_id, "--timeout", "30")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "7"


def test_call_countdown_waits_in_the_broker(proj: Project) -> None:
    with proj.worker():
        before = time.time()
        task_id = _task_id(proj.cli("call", "proj.now", "--countdown", "2").stdout)
        ran_at = proj.app.AsyncResult(task_id).get(timeout=30)
    assert ran_at >= before + 2 - 0.05  # 50 ms slack for clock resolution


def test_call_queue_goes_to_that_queue_only(proj: Project) -> None:
    task_id = _task_id(proj.cli("call", "proj.add", "--args", "[1,1]", "--queue", "other").stdout)
    broker = proj.app.broker
    assert broker.stats("other").ready == 1
    assert broker.stats("celery").ready == 0
    with proj.worker("-Q", "other"):
        assert proj.app.AsyncResult(task_id).get(timeout=30) == 2


def test_result_waits_as_celery_and_timeout_bounds_it(proj: Project) -> None:
    shown = proj.cli("result", "00000000-0000-0000-0000-000000000000", "--timeout", "0.5")
    assert shown.returncode == 1, shown.stdout
    assert shown.stderr.startswith("PENDING: not done after 0.5 s"), shown.stderr
    task_id = _task_id(proj.cli("call", "proj.add", "--args", "[1,2]").stdout)
    waiting = subprocess.Popen([sys.executable, "-m", "celeriac", "-A", proj.module,
                                "result", task_id], cwd=proj.path,
                               env=proj.env(), stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    assert waiting.poll() is None  # no worker yet: it waits, as celery result does
    with proj.worker():
        out, _ = waiting.communicate(timeout=60)
    assert waiting.returncode == 0 and out.strip() == "3"


ELSEWHERE = """
    from pathlib import Path

    from celeriac import Celery, Task

    app = Celery("proj")
    OTHER = Celery("other", backend="sqlite:///" + str(Path(__file__).parent / "other.db"),
                   set_as_current=False)


    class Elsewhere(Task):
        def AsyncResult(self, task_id, **kwargs):
            return OTHER.AsyncResult(task_id)


    @app.task(base=Elsewhere)
    def special():
        return "kept elsewhere"
"""


def test_result_task_option_reads_through_the_tasks_asyncresult(tmp_path: Path) -> None:
    """Celery's ``result -t NAME`` reads through that task's AsyncResult (a task whose
    results are in a store of its own); ``--traceback`` does not wait."""
    from celeriac.results.meta import store_result

    with project(tmp_path, ELSEWHERE) as proj:
        module = proj.client()
        store_result(module.OTHER, "t-1", "kept elsewhere", "SUCCESS")
        store_result(module.OTHER, "t-2", ValueError("boom"), "FAILURE", traceback="TB here")
        shown = proj.cli("result", "-t", "proj.special", "t-1", "--timeout", "30")
        assert (shown.returncode, shown.stdout.strip()) == (0, "kept elsewhere"), shown.stderr
        default = proj.cli("result", "t-1", "--timeout", "0.5")  # the app's own store
        assert default.returncode == 1 and default.stderr.startswith("PENDING"), default
        traced = proj.cli("result", "--task", "proj.special", "--traceback", "t-2")
        assert (traced.returncode, traced.stdout.strip()) == (0, "TB here"), traced.stderr
        pending = proj.cli("result", "--traceback", "never-sent")  # at once, as Celery
        assert (pending.returncode, pending.stdout.strip()) == (0, ""), pending.stderr
        unknown = proj.cli("result", "-t", "proj.nope", "t-1")
        assert unknown.returncode == 2 and "proj.nope" in unknown.stderr
        module.OTHER.close()


def test_purge_force_deletes_waiting_messages(proj: Project) -> None:
    for _ in range(3):
        assert proj.cli("call", "proj.add", "--args", "[1,2]").returncode == 0
    assert proj.cli("call", "proj.add", "--args", "[1,2]", "--countdown", "60").returncode == 0
    assert proj.cli("call", "proj.add", "--args", "[1,2]", "--queue", "keep").returncode == 0

    purged = proj.cli("purge", "-f")

    assert purged.returncode == 0, purged.stderr
    assert "Purged 4 messages" in purged.stdout
    broker = proj.app.broker
    assert (broker.stats("celery").ready, broker.stats("celery").delayed) == (0, 0)
    assert broker.stats("keep").ready == 1


def test_purge_named_queues(proj: Project) -> None:
    for queue in ("a", "b", "c"):
        assert proj.cli("call", "proj.add", "--args", "[1,2]", "-Q", queue).returncode == 0
    purged = proj.cli("purge", "-f", "-Q", "a,b")
    assert purged.returncode == 0, purged.stderr
    assert "Purged 2 messages" in purged.stdout
    broker = proj.app.broker
    assert [broker.stats(q).ready for q in ("a", "b", "c")] == [0, 0, 1]


@pytest.mark.parametrize(("command", "options"), [
    ("worker", ["--concurrency", "--pool", "--queues", "--loglevel", "--hostname"]),
    ("call", ["--args", "--kwargs", "--countdown", "--eta", "--expires", "--queue"]),
    ("result", ["--timeout", "--traceback"]),
    ("purge", ["--queues", "--force"]),
])
def test_help_of_each_command(proj: Project, command: str, options: list[str]) -> None:
    shown = proj.raw_cli(command, "--help")
    assert shown.returncode == 0, shown.stderr
    for option in options:
        assert option in shown.stdout, f"{option} missing from `{command} --help`"


def test_top_level_help_lists_the_commands(proj: Project) -> None:
    shown = proj.raw_cli("--help")
    assert shown.returncode == 0, shown.stderr
    for command in ("worker", "call", "result", "purge", "--app", "--broker"):
        assert command in shown.stdout


def test_worker_concurrency_runs_tasks_at_the_same_time(tmp_path: Path) -> None:
    source = PROJ + """

    @app.task
    def nap(seconds):
        start = time.time()
        time.sleep(seconds)
        return [start, time.time()]
    """
    with project(tmp_path, source) as proj, proj.worker(concurrency=4):
        results = [proj.client().nap.delay(2.0) for _ in range(4)]
        spans = [r.get(timeout=60) for r in results]
    starts, ends = [s for s, _ in spans], [e for _, e in spans]
    assert max(starts) < min(ends), f"the 4 tasks did not overlap: {spans}"


def test_worker_consumes_only_the_listed_queues(proj: Project) -> None:
    app = proj.app
    sent = {q: app.send_task("proj.add", (1, 1), queue=q) for q in ("a", "b", "c")}
    with proj.worker("-Q", "a,b"):
        assert sent["a"].get(timeout=30) == 2
        assert sent["b"].get(timeout=30) == 2
        time.sleep(1.0)  # give the worker a chance to (wrongly) take c
        assert app.broker.stats("c").ready == 1
        assert sent["c"].state == "PENDING"


def test_result_cli_waits_for_a_task_sent_before_the_worker_starts(proj: Project) -> None:
    task_id = _task_id(proj.cli("call", "proj.add", "--args", "[20,22]").stdout)
    assert proj.app.AsyncResult(task_id).state == "PENDING"
    with proj.worker():
        wait_until(lambda: proj.app.AsyncResult(task_id).ready(), what="the result")
        shown = proj.cli("result", task_id)
    assert shown.stdout.strip() == "42"
