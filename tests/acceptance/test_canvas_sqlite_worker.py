"""Canvas on the SQLite broker (and PostgreSQL) through real worker processes, with a kill test.

The "Done when" test: a chord of 1,000 header tasks fires its body exactly
once with the 1,000 results in order while worker processes are SIGKILLed
every second (prefork children when the prefork pool works, whole
``-P threads`` workers otherwise). Body runs are counted in a side-effect file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeryproc import child_pids, wait_until

PROJ = textwrap.dedent('''
    import os
    import time
    from celeriac import Celery

    app = Celery("canvasproj", broker="sqlite:///" + os.environ["CANVAS_DB"])
    app.conf.worker_lease_seconds = 2
    # kills are frequent: a header message lost 3 times would be dead-lettered, and a
    # dead-lettered member does not report to its chord yet (see docs/canvas.md)
    app.conf.worker_max_redeliveries = 0
    BODY_LOG = os.environ["CANVAS_BODY_LOG"]

    @app.task(name="cp.add", acks_late=True)
    def add(x, y):
        return x + y

    @app.task(name="cp.mul", acks_late=True)
    def mul(x, y):
        return x * y

    @app.task(name="cp.slow_add", acks_late=True)
    def slow_add(x, y):
        time.sleep(0.02)
        return x + y

    @app.task(name="cp.boom", acks_late=True)
    def boom(*args):
        raise ValueError("boom")

    @app.task(name="cp.collect", acks_late=True)
    def collect(values):
        with open(BODY_LOG, "a") as f:
            f.write(f"{len(values)} {sum(values)} {int(values == sorted(values))}\\n")
        return len(values)

    @app.task(name="cp.replaced", bind=True)
    def replaced(self, x):
        raise self.replace(add.s(x, 1) | mul.s(10))

    @app.task(name="cp.fetch_page")
    def fetch_page(url):
        return "<html>" + url + "</html>"

    @app.task(name="cp.parse_page")
    def parse_page(page):
        return {"length": len(page)}

    @app.task(name="cp.store_page_info", ignore_result=True)
    def store_page_info(info, url):
        with open(BODY_LOG + ".pages", "a") as f:
            f.write(f"{url} {info['length']}\\n")

    @app.task(name="cp.store_error", acks_late=True)
    def store_error(task_id):
        with open(BODY_LOG + ".err", "a") as f:
            f.write(task_id + "\\n")
''')


class Env:
    def __init__(self, tmp: Path, url: str | None = None) -> None:
        self.tmp = tmp
        self.db = str(tmp / "canvas.sqlite3")
        self.body_log = tmp / "body.log"
        (tmp / "canvasproj.py").write_text(PROJ)
        #: PostgreSQL as broker and result store (env override), else the SQLite file
        self.urls = {"CELERIAC_BROKER_URL": url, "CELERIAC_RESULT_BACKEND": url} if url else {}
        self.env = {**os.environ, "CANVAS_DB": self.db, "CANVAS_BODY_LOG": str(self.body_log),
                    "PYTHONPATH": f"{tmp}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                    **self.urls}
        self.workers: list[subprocess.Popen[bytes]] = []

    def app(self) -> Any:
        os.environ["CANVAS_DB"] = self.db
        os.environ["CANVAS_BODY_LOG"] = str(self.body_log)
        os.environ.update(self.urls)
        sys.path.insert(0, str(self.tmp))
        sys.modules.pop("canvasproj", None)
        import canvasproj  # type: ignore[import-not-found]

        sys.path.remove(str(self.tmp))
        return canvasproj.app

    def start_worker(self, pool: str = "threads", concurrency: int = 4) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "celeriac", "-A", "canvasproj", "worker", "-P", pool,
               "-c", str(concurrency), "-l", "WARNING"]
        proc = subprocess.Popen(cmd, cwd=self.tmp, env=self.env, stdout=subprocess.DEVNULL,
                                stderr=open(self.tmp / "worker.err", "ab"))  # noqa: SIM115
        self.workers.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def body_lines(self) -> list[str]:
        return self.body_log.read_text().splitlines() if self.body_log.exists() else []


@pytest.fixture(params=["sqlite", "postgres"])
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    # not pytest's tmp_path: concurrent pytest runs prune each other's base temp dirs,
    # and the worker processes need their database for the whole test
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    with tempfile.TemporaryDirectory(prefix="celeriac-canvas-") as tmp:
        e = Env(Path(tmp), url)
        try:
            yield e
        finally:
            e.stop()
            app = sys.modules.get("canvasproj")
            if app is not None:
                app.app.close()
            for key in e.urls:
                os.environ.pop(key, None)


def test_chain_group_chord_through_a_worker_process(env: Env) -> None:
    from celeriac import chord, group

    app = env.app()
    env.start_worker()
    add, mul, collect = app.tasks["cp.add"], app.tasks["cp.mul"], app.tasks["cp.collect"]
    assert (add.s(1, 2) | mul.s(3) | add.s(1)).delay().get(timeout=30) == 10
    res = group(add.s(i, i) for i in range(25)).apply_async()
    assert res.get(timeout=30) == [2 * i for i in range(25)]
    assert chord([add.s(i, 0) for i in range(40)])(collect.s()).get(timeout=30) == 40
    assert env.body_lines() == [f"40 {sum(range(40))} 1"]
    assert add.chunks([(i, i) for i in range(4)], 3).delay().get(timeout=30) == [[0, 2, 4], [6]]
    nested = chord(group(add.s(1, 1) | mul.s(5), add.s(0, 1)), collect.s()).delay()
    assert nested.get(timeout=30) == 2


def test_seed_chain_map_replace_link_through_a_worker_process(env: Env) -> None:
    app = env.app()
    env.start_worker()
    fetch, parse, store = (app.tasks[f"cp.{n}"] for n in ("fetch_page", "parse_page",
                                                           "store_page_info"))
    url = "http://example.com/"
    res = (fetch.s(url) | parse.s() | store.s(url))()  # seed 002, the "good" chain
    assert res.parent.get(timeout=30) == {"length": len(url) + 13}
    pages = Path(str(env.body_log) + ".pages")
    wait_until(pages.exists, 10)
    assert pages.read_text() == f"{url} {len(url) + 13}\n"
    add = app.tasks["cp.add"]
    assert add.starmap([(1, 2), (3, 4)]).delay().get(timeout=30) == [3, 7]
    assert app.tasks["cp.collect"].map([[1], [2, 3]]).delay().get(timeout=30) == [1, 2]
    assert (app.tasks["cp.replaced"].s(4) | add.s(1)).delay().get(timeout=30) == 51
    sig = app.tasks["cp.boom"].s()
    sig.link_error(app.tasks["cp.store_error"].s())
    failed = sig.delay()
    with pytest.raises(ValueError):
        failed.get(timeout=30)
    err = Path(str(env.body_log) + ".err")
    wait_until(err.exists, 10)
    assert err.read_text().split() == [failed.id]


def test_chord_failure_through_a_worker_process(env: Env) -> None:
    from celeriac import chord
    from celeriac.exceptions import ChordError

    app = env.app()
    env.start_worker()
    body = app.tasks["cp.collect"].s().on_error(app.tasks["cp.store_error"].s())
    res = chord([app.tasks["cp.add"].s(1, 1), app.tasks["cp.boom"].s()], body).delay()
    with pytest.raises(ChordError, match="raised ValueError"):
        res.get(timeout=30, follow_parents=False)
    err = Path(str(env.body_log) + ".err")
    wait_until(err.exists, 10)
    assert err.read_text().split() == [res.id] and env.body_lines() == []


# SQLite only: PostgreSQL's kill -9 coverage is tests/acceptance/test_worker_chaos.py
@pytest.mark.parametrize("env", ["sqlite"], indirect=True)
def test_chord_of_1000_fires_once_while_workers_are_killed(env: Env) -> None:
    from celeriac import chord

    app = env.app()
    n = 1000
    res = chord([app.tasks["cp.slow_add"].s(i, 0) for i in range(n)])(
        app.tasks["cp.collect"].s())
    prefork = env.start_worker("prefork", 2)
    threads = env.start_worker("threads", 4)
    kills = 0
    deadline = time.monotonic() + 120
    while not env.body_lines() and time.monotonic() < deadline:
        time.sleep(1.0)
        if env.body_lines():
            break
        victims = child_pids(prefork.pid)
        if victims:  # a prefork child dies; the supervisor replaces it
            os.kill(victims[kills % len(victims)], signal.SIGKILL)
        if kills % 2 == 0:  # and every other second a whole threads worker
            os.kill(threads.pid, signal.SIGKILL)
            threads.wait()
            threads = env.start_worker("threads", 4)
        kills += 1
    assert res.get(timeout=30) == n
    time.sleep(3)  # let any duplicate (there must be none) run
    assert env.body_lines() == [f"{n} {sum(range(n))} 1"], json.dumps(env.body_lines())
    assert kills >= 3, kills
    print(f"{kills} kill rounds")
