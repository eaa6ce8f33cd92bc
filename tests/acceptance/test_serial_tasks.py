"""CommCare's toolbox on real worker processes (issue 18), on SQLite and Redis.

* two workers (prefork and threads) x 50 calls of one ``serial_task`` key never
  overlap (each run records its start and end);
* ``kill -9`` of the worker holding a ``serial_task`` lock: the lock goes when
  the dead worker's lease lapses, and another worker runs both calls;
* a ``periodic_task`` from ``celeriac.task`` fires through beat (``worker -B``);
* ``unique_for`` drops a duplicate within its window: it runs once;
* ``celeriac status`` shows who holds a slot.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from workerproc import Project, project, read_lines, wait_until

LEASE = 3.0

SOURCE = '''
    import os
    import time
    from datetime import timedelta
    from pathlib import Path

    from celeriac import Celery
    from celeriac.task import periodic_task, serial_task

    HERE = Path(__file__).parent
    app = Celery("proj", broker=os.environ.get("TEST_BROKER") or None,
                 backend=os.environ.get("TEST_BACKEND") or None)
    app.conf.worker_lease_seconds = __LEASE__
    if os.environ.get("TEST_PREFIX"):
        app.conf.broker_transport_options = {"global_keyprefix": os.environ["TEST_PREFIX"]}


    def note(name, text):
        with open(HERE / name, "a") as fh:  # O_APPEND: one write per line
            fh.write(text + "\\n")


    @serial_task("{0}", default_retry_delay=0.05, max_retries=None, ignore_result=False,
                 name="proj.serial")
    def serial(key, n):
        start = time.time()
        time.sleep(0.01)
        note("spans", f"{n} {os.getpid()} {start!r} {time.time()!r}")


    @serial_task("{0}", default_retry_delay=0.2, on_busy="requeue", ignore_result=False,
                 name="proj.hold")
    def hold(key, marker):
        note("started", f"{marker} {os.getpid()}")
        deadline = time.monotonic() + 120
        while not (HERE / f"release-{marker}").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        note("finished", f"{marker} {os.getpid()}")


    @periodic_task(run_every=timedelta(seconds=1), name="proj.tick")
    def tick():
        note("ticks", str(time.time()))


    @app.task(name="proj.once", unique_for=30, unique_key="{0}")
    def once(key, n):
        note("once", f"{key} {n}")
'''.replace("__LEASE__", str(LEASE))


@pytest.fixture(params=["sqlite", "redis", "redis-cluster"])
def proj(request: pytest.FixtureRequest, tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    if request.param == "redis":
        monkeypatch.setenv("TEST_BROKER", request.getfixturevalue("redis_url"))
        monkeypatch.setenv("TEST_BACKEND", f"sqlite:///{tmp_path / 'results.sqlite3'}")
        monkeypatch.setenv("TEST_PREFIX", request.getfixturevalue("key_prefix"))
    if request.param == "redis-cluster":  # slots on one master, leases on another
        monkeypatch.setenv("TEST_BROKER", request.getfixturevalue("redis_cluster_url"))
        monkeypatch.setenv("TEST_BACKEND", f"sqlite:///{tmp_path / 'results.sqlite3'}")
        monkeypatch.setenv("TEST_PREFIX", request.getfixturevalue("cluster_key_prefix"))
    with project(tmp_path, SOURCE) as made:
        yield made


def spans(proj: Project) -> list[tuple[int, int, float, float]]:
    out = []
    for line in read_lines(proj.path / "spans"):
        n, pid, start, end = line.split()
        out.append((int(n), int(pid), float(start), float(end)))
    return out


def test_two_workers_never_overlap_a_serial_key(proj: Project) -> None:
    client = proj.client()
    with proj.worker(pool="prefork", concurrency=3), proj.worker(concurrency=4) as two:
        results = [client.serial.delay("k", n) for n in range(50)]
        for res in results:
            res.get(timeout=120)
        ran = sorted(spans(proj), key=lambda s: s[2])
        assert sorted(s[0] for s in ran) == list(range(50))
        for before, after in itertools.pairwise(ran):
            assert after[2] >= before[3], f"runs overlap: {before} and {after}"
        pids = {s[1] for s in ran}  # prefork children and the threads worker took part
        assert two.proc.pid in pids and len(pids) >= 2
        wait_until(lambda: not proj.app.broker.slot_holders(), what="slots given back")


def test_kill_9_while_holding_the_lock_releases_it_with_the_lease(proj: Project) -> None:
    client = proj.client()
    broker = proj.app.broker
    with proj.worker(concurrency=2) as victim:
        first = client.hold.delay("k", "one")
        wait_until(lambda: read_lines(proj.path / "started"), what="the first run")
        [holder] = broker.slot_holders("proj.hold:k")
        assert holder.task_id == first.id and f":{victim.proc.pid}:" in str(holder.owner)
        status = proj.cli("status")
        assert "proj.hold:k: task " + first.id in status.stdout, status.stdout
        second = client.hold.delay("k", "two")
        victim.wait_for_log(f"[{second.id}] waits: slot 'proj.hold:k' is full")
        victim.kill()  # SIGKILL: no cleanup of any kind
        killed = time.monotonic()
        assert broker.slot_holders("proj.hold:k")  # still held: the lease has not lapsed
        wait_until(lambda: not broker.slot_holders("proj.hold:k"), timeout=LEASE + 15,
                   what="the lock to go with the dead worker's lease")
        assert time.monotonic() - killed >= LEASE * 0.5  # held until the lease ran out
    with proj.worker(concurrency=2) as rescuer:
        wait_until(lambda: len(read_lines(proj.path / "started")) >= 2, timeout=60,
                   what="a run on the new worker")
        assert f" {rescuer.proc.pid}" in read_lines(proj.path / "started")[1]
        (proj.path / "release-one").touch()
        (proj.path / "release-two").touch()
        assert first.get(timeout=60) is None and second.get(timeout=60) is None
    finished = [line.split() for line in read_lines(proj.path / "finished")]
    assert sorted(marker for marker, _ in finished) == ["one", "two"]
    assert all(int(pid) == rescuer.proc.pid for _, pid in finished)


def test_periodic_task_fires_through_beat(proj: Project) -> None:
    with proj.worker("-B", concurrency=1):
        wait_until(lambda: len(read_lines(proj.path / "ticks")) >= 2, timeout=60,
                   what="two ticks")


def test_unique_for_drops_duplicates(proj: Project) -> None:
    client = proj.client()
    first = client.once.delay("a", 1)
    again = client.once.delay("a", 2)
    other = client.once.delay("b", 3)
    assert again.id == first.id and other.id != first.id
    with proj.worker(concurrency=2):
        first.get(timeout=60)
        other.get(timeout=60)
        time.sleep(0.5)
    assert sorted(read_lines(proj.path / "once")) == ["a 1", "b 3"]
