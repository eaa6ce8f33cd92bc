"""celeriac.contrib.pytest: each fixture of Celery's plugin, the entry-point opt-in, the app
trap and start_worker (a real worker: serialization, acks, retries, canvas)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery, chain, current_app, group
from celeriac.contrib.testing import worker as testing_worker
from celeriac.contrib.testing.app import TestApp, Trap, setup_default_app
from celeriac.contrib.testing.worker import start_worker


def test_celery_app_is_a_fresh_memory_app(celery_app: Celery) -> None:
    assert celery_app.broker_url == "memory://" and celery_app.backend_url == "memory://"
    assert "celery.ping" in celery_app.tasks
    assert celery_app.conf.worker_hijack_root_logger is False


def test_celery_worker_runs_through_the_broker(celery_app: Celery, celery_worker: Any) -> None:
    @celery_app.task(bind=True, max_retries=3, default_retry_delay=0)
    def flaky(self: Any, n: int) -> dict[str, Any]:
        if self.request.retries < 2:
            raise self.retry(countdown=0)
        return {"n": n, "retries": self.request.retries, "eager": self.request.is_eager,
                "hostname": self.request.hostname}

    @celery_app.task
    def add(x: int, y: int) -> int:
        return x + y

    got = flaky.delay(7).get(timeout=10)
    assert got == {"n": 7, "retries": 2, "eager": False, "hostname": celery_worker.hostname}
    assert chain(add.s(1, 2), add.s(3)).delay().get(timeout=10) == 6
    assert group(add.s(i, i) for i in range(3)).delay().get(timeout=10) == [0, 2, 4]
    with pytest.raises(TypeError):  # a real publish: JSON refuses it before any worker
        add.delay(object(), 1)


def test_session_app_and_worker(celery_session_app: Celery, celery_session_worker: Any) -> None:
    assert celery_session_worker.app is celery_session_app
    assert celery_session_app.tasks["celery.ping"].delay().get(timeout=10) == "pong"


def test_worker_pool_and_parameters_reach_the_worker() -> None:
    app = TestApp()

    @app.task
    def where() -> str:
        return "ok"

    with start_worker(app, pool="threads", concurrency=2, queues=["a", "celery"],
                      exclude_queues="a") as worker:
        assert worker.pool_name == "threads" and worker.concurrency == 2
        assert worker.queues == ["celery"]
        assert where.delay().get(timeout=10) == "ok"
    app.close()


def test_start_worker_signals_and_shutdown_timeout() -> None:
    app = TestApp()
    seen: list[str] = []
    receivers = [(signal, lambda sender, _n=name, **kw: seen.append(_n))
                 for signal, name in ((testing_worker.test_worker_starting, "starting"),
                                      (testing_worker.test_worker_started, "started"),
                                      (testing_worker.test_worker_stopped, "stopped"))]
    for signal, receiver in receivers:
        signal.connect(receiver)
    try:
        with start_worker(app, perform_ping_check=False):
            pass
    finally:
        for signal, receiver in receivers:
            signal.disconnect(receiver)
    assert seen == ["starting", "started", "stopped"]
    app.close()


def test_ping_check_needs_the_ping_task() -> None:
    app = Celery("bare", broker="memory://", set_as_current=False)
    app.tasks.pop("celery.ping", None)
    with pytest.raises(RuntimeError, match=r"celery\.ping"), start_worker(app):
        pass
    app.close()


def test_app_trap_raises_on_current_app() -> None:
    app = TestApp()
    before = current_app._get()
    with setup_default_app(app, use_trap=True):
        with pytest.raises(RuntimeError, match="depends on current_app"):
            _ = current_app.conf
        assert isinstance(current_app._get(), Trap)
    assert current_app._get() is before


def test_depends_on_current_app(celery_app: Celery, depends_on_current_app: None) -> None:
    assert current_app._get() is celery_app


def test_fixture_defaults(celery_config: Any, celery_parameters: Any, celery_includes: Any,
                          celery_worker_pool: str, celery_worker_parameters: Any,
                          celery_enable_logging: bool, use_celery_app_trap: bool,
                          celery_class_tasks: Any) -> None:
    assert (celery_config, celery_parameters, celery_worker_parameters) == ({}, {}, {})
    assert tuple(celery_includes) == () and list(celery_class_tasks) == []
    assert celery_worker_pool == "solo"
    assert celery_enable_logging is False and use_celery_app_trap is False


OPT_IN_TEST = '''
def test_uses_fixture(celery_app, celery_worker):
    @celery_app.task
    def mul(x, y):
        return x * y
    assert mul.delay(4, 4).get(timeout=10) == 16
'''


def _run_pytest(tmp_path: Path, *args: str, ini: str = "") -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_optin.py").write_text(OPT_IN_TEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\n" + ini)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *args, str(tmp_path)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)


def test_plugin_is_off_until_enabled(tmp_path: Path) -> None:
    off = _run_pytest(tmp_path)
    assert off.returncode != 0 and "fixture 'celery_app' not found" in off.stdout


@pytest.mark.parametrize("how", ["ini", "flag", "pytest_plugins"])
def test_plugin_opt_in(tmp_path: Path, how: str) -> None:
    if how == "pytest_plugins":
        (tmp_path / "conftest.py").write_text(textwrap.dedent(
            '''pytest_plugins = ("celeriac.contrib.pytest",)\n'''))
    done = _run_pytest(tmp_path, *(["--celeriac-fixtures"] if how == "flag" else []),
                       ini="celeriac_fixtures = true\n" if how == "ini" else "")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_commcare_update_state_then_ignore_on_a_real_worker(celery_app: Celery) -> None:
    """docs/testing.md: the CommCare seed's mocked test, against a real worker."""
    from celeriac import states
    from celeriac.contrib.testing.drain import drain
    from celeriac.exceptions import Ignore

    @celery_app.task(bind=True)
    def my_cool_task(self: Any) -> None:
        self.update_state(state=states.FAILURE, meta={"errors": ["my uncool errors"]})
        raise Ignore()

    result = my_cool_task.delay()
    assert drain(celery_app).total == 0  # ignored: neither success nor failure
    assert result.state == states.FAILURE
    assert result.info == {"errors": ["my uncool errors"]}


def test_unknown_worker_options_are_refused() -> None:
    app = TestApp()
    with pytest.raises(TypeError, match="max_tasks_per_chlid"), \
            start_worker(app, max_tasks_per_chlid=3):
        pass
    with start_worker(app, without_heartbeat=False, without_mingle=True,
                      perform_ping_check=False) as worker:  # Celery's switches: accepted
        assert worker.app is app
    app.close()


def test_enable_logging_sets_up_the_worker_log(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    app = TestApp(enable_logging=True)
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    try:
        with start_worker(app, perform_ping_check=False, loglevel="INFO"):
            added = [h for h in root.handlers if h not in before]
            assert len(added) == 1
    finally:
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)
        root.setLevel(level)
        app.close()


@pytest.mark.parametrize("without_heartbeat", [True, False])
def test_start_worker_sends_worker_events_only_without_heartbeat_off(
        without_heartbeat: bool) -> None:
    """As Celery's test worker (which runs without its heartbeat step): no ``worker-*``
    events by default; ``without_heartbeat=False`` sends them. Task events go either way."""
    import threading
    import time

    app = Celery("beats", broker="memory://", backend="cache+memory://")
    app.conf.worker_send_task_events = True
    app.task(name="beats.ping")(lambda: "pong")
    events: list[str] = []
    receiver = app.events.Receiver(handlers={"*": lambda e: events.append(e["type"])})
    threading.Thread(target=receiver.capture, kwargs={"wakeup": False}, daemon=True).start()
    time.sleep(0.2)
    try:
        with start_worker(app, perform_ping_check=False,
                          without_heartbeat=without_heartbeat):
            assert app.tasks["beats.ping"].delay().get(timeout=10) == "pong"
            deadline = time.monotonic() + 5
            while "task-succeeded" not in events or (
                    not without_heartbeat and "worker-online" not in events):
                assert time.monotonic() < deadline, events
                time.sleep(0.05)
    finally:
        receiver.should_stop = True
    assert ("worker-online" in events) is (not without_heartbeat)
