"""The result store contract, checked on every store (``result_store`` fixture).

Covers set/get/get_many/delete, expiry, ``wait`` (woken by a set from another
thread), group metadata and the atomic chord join ``chord_add``/``chord_clear``.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from celeriac.results.store import ResultStore


def meta(task_id: str, status: str = "SUCCESS", result: Any = 4) -> dict[str, Any]:
    return {"status": status, "result": result, "traceback": None, "children": [],
            "date_done": "2026-11-21T13:36:40.118348+00:00", "task_id": task_id}


def new_id() -> str:
    return uuid.uuid4().hex


def test_set_get_round_trip(result_store: ResultStore) -> None:
    task_id = new_id()
    value = meta(task_id, result={"when": datetime(2026, 1, 2, tzinfo=timezone.utc),
                                  "items": [1, "two", None]})
    assert result_store.get(task_id) is None
    result_store.set(task_id, value)
    assert result_store.get(task_id) == value
    result_store.set(task_id, meta(task_id, result=5))
    assert result_store.get(task_id) == meta(task_id, result=5)


def test_get_many_returns_only_stored(result_store: ResultStore) -> None:
    stored = [new_id() for _ in range(3)]
    for task_id in stored:
        result_store.set(task_id, meta(task_id))
    missing = new_id()
    found = result_store.get_many([*stored, missing])
    assert found == {task_id: meta(task_id) for task_id in stored}
    assert result_store.get_many([]) == {}


def test_set_many_stores_every_item(result_store: ResultStore) -> None:
    ids = [new_id() for _ in range(5)]
    result_store.set_many([(tid, meta(tid, result=i)) for i, tid in enumerate(ids)])
    found = result_store.get_many(ids)
    assert [found[tid]["result"] for tid in ids] == [0, 1, 2, 3, 4]
    result_store.set_many([])  # an empty batch is a no-op


def test_delete(result_store: ResultStore) -> None:
    task_id = new_id()
    result_store.set(task_id, meta(task_id))
    result_store.delete(task_id)
    assert result_store.get(task_id) is None
    result_store.delete(task_id)


def test_expired_results_disappear(result_store: ResultStore) -> None:
    short, forever = new_id(), new_id()
    result_store.set(short, meta(short), expires=1)
    result_store.set(forever, meta(forever), expires=None)
    assert result_store.get(short) == meta(short)
    deadline = time.monotonic() + 4
    while result_store.get(short) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert result_store.get(short) is None
    assert result_store.get_many([short]) == {}
    assert result_store.get(forever) == meta(forever)


def in_thread(store: ResultStore, target: Callable[..., None], *args: Any) -> threading.Thread:
    """A thread running ``target``. Django opens a connection per thread and keeps it after
    the thread ends: the thread closes its own, so tests do not use up the shared
    PostgreSQL server's connections."""
    def run() -> None:
        try:
            target(*args)
        finally:
            if type(store).__module__.startswith("celeriac.contrib.django"):
                from django.db import connections

                connections.close_all()

    return threading.Thread(target=run)


def test_wait_wakes_when_result_is_stored(result_store: ResultStore) -> None:
    task_id = new_id()
    result_store.set(task_id, meta(task_id, status="STARTED", result=None))
    stored: list[float] = []

    def finish() -> None:
        time.sleep(0.3)
        result_store.set(task_id, meta(task_id))
        stored.append(time.monotonic())

    thread = in_thread(result_store, finish)
    thread.start()
    got = result_store.wait(task_id, timeout=5)
    woke = time.monotonic()
    thread.join()
    assert got == meta(task_id)
    assert woke - stored[0] < 0.5


def test_wait_times_out_with_last_seen_meta(result_store: ResultStore) -> None:
    task_id = new_id()
    start = time.monotonic()
    assert result_store.wait(task_id, timeout=0.3) is None
    assert 0.25 <= time.monotonic() - start < 2
    result_store.set(task_id, meta(task_id, status="STARTED", result=None))
    assert result_store.wait(task_id, timeout=0.2) == meta(task_id, "STARTED", None)


def test_group_meta(result_store: ResultStore) -> None:
    group_id = new_id()
    value = {"result": [["a", None], ["b", None]], "group_id": group_id}
    assert result_store.get_group(group_id) is None
    result_store.save_group(group_id, value)
    assert result_store.get_group(group_id) == value
    result_store.delete_group(group_id)
    assert result_store.get_group(group_id) is None


def chord_add(store: ResultStore, group_id: str, index: int, size: int) -> Any:
    return store.chord_add(group_id, index, meta(f"{group_id}-{index}", result=index), size)


def test_chord_add_completes_once_in_order(result_store: ResultStore) -> None:
    group_id = new_id()
    assert chord_add(result_store, group_id, 2, 3) is None
    assert chord_add(result_store, group_id, 2, 3) is None
    assert chord_add(result_store, group_id, 0, 3) is None
    done = chord_add(result_store, group_id, 1, 3)
    assert done == [meta(f"{group_id}-{i}", result=i) for i in range(3)]
    for index in range(3):
        assert chord_add(result_store, group_id, index, 3) is None
    result_store.chord_clear(group_id)
    assert chord_add(result_store, group_id, 0, 2) is None
    assert chord_add(result_store, group_id, 1, 2) == [
        meta(f"{group_id}-{i}", result=i) for i in range(2)]
    result_store.chord_clear(group_id)


def test_chord_add_single_member(result_store: ResultStore) -> None:
    group_id = new_id()
    assert chord_add(result_store, group_id, 0, 1) == [meta(f"{group_id}-0", result=0)]
    assert chord_add(result_store, group_id, 0, 1) is None
    result_store.chord_clear(group_id)


def test_chord_add_has_exactly_one_completer_under_concurrency(
        result_store: ResultStore) -> None:
    group_id, size = new_id(), 30
    completions: list[Any] = []
    lock = threading.Lock()

    def member(seed: int) -> None:
        order = list(range(size)) * 2
        random.Random(seed).shuffle(order)
        for index in order:
            done = chord_add(result_store, group_id, index, size)
            if done is not None:
                with lock:
                    completions.append(done)

    threads = [in_thread(result_store, member, seed) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert completions == [[meta(f"{group_id}-{i}", result=i) for i in range(size)]]
    result_store.chord_clear(group_id)


def test_a_write_over_revoked_is_refused(result_store: ResultStore) -> None:
    """The REVOKED rule: once revoked, a late STARTED/SUCCESS/FAILURE never replaces it."""
    task_id, other = new_id(), new_id()
    assert result_store.set(task_id, meta(task_id, "STARTED", None)) is True
    assert result_store.set(task_id, meta(task_id, "REVOKED", None)) is True
    for status in ("STARTED", "SUCCESS", "FAILURE", "RETRY"):
        assert result_store.set(task_id, meta(task_id, status)) is False
    assert result_store.get(task_id) == meta(task_id, "REVOKED", None)
    assert result_store.set_many([(task_id, meta(task_id)), (other, meta(other))]) == [
        False, True]
    assert result_store.get(task_id)["status"] == "REVOKED"
    assert result_store.get(other) == meta(other)
    revoked_again = {**meta(task_id, "REVOKED", None), "terminate": "SIGTERM"}
    assert result_store.set(task_id, revoked_again) is True  # REVOKED over REVOKED is fine
    assert result_store.get(task_id) == revoked_again
    result_store.delete(task_id)  # forget() still works
    assert result_store.set(task_id, meta(task_id)) is True


def test_set_unless_succeeded_keeps_a_success_and_a_revoke(result_store: ResultStore) -> None:
    """What every non-SUCCESS state is stored with (``store_result``): never over a
    SUCCESS (a redelivery or a late revoke), never over REVOKED unless REVOKED."""
    done, revoked, fresh, broken = new_id(), new_id(), new_id(), new_id()
    assert result_store.set(done, meta(done)) is True
    for status in ("STARTED", "FAILURE", "RETRY", "REVOKED"):
        assert result_store.set_unless_succeeded(done, meta(done, status, None)) is False
    assert result_store.get(done) == meta(done)
    assert result_store.set(revoked, meta(revoked, "REVOKED", None)) is True
    assert result_store.set_unless_succeeded(revoked, meta(revoked, "FAILURE")) is False
    revoked_again = {**meta(revoked, "REVOKED", None), "terminate": "SIGTERM"}
    assert result_store.set_unless_succeeded(revoked, revoked_again) is True
    assert result_store.get(revoked) == revoked_again
    assert result_store.set_unless_succeeded(fresh, meta(fresh, "STARTED", None)) is True
    assert result_store.set_unless_succeeded(fresh, meta(fresh, "FAILURE")) is True
    assert result_store.get(fresh) == meta(fresh, "FAILURE")
    big = {**meta(broken), "result": "x" * 100_000}  # over the script's decoding bound
    assert result_store.set(broken, big) is True
    assert result_store.set_unless_succeeded(broken, meta(broken, "FAILURE")) is False
    assert result_store.get(broken) == big


def test_the_revoked_rule_holds_under_concurrent_writers(result_store: ResultStore) -> None:
    """Check and write are one atomic step: racing a revoke, a result either lands before
    it (and is replaced by REVOKED) or is refused; REVOKED always stands at the end."""
    for _ in range(20):
        task_id = new_id()
        start = threading.Barrier(3)

        def write(status: str, tid: str = task_id, start: threading.Barrier = start) -> None:
            start.wait()
            for _ in range(20):
                result_store.set(tid, meta(tid, status))

        threads = [in_thread(result_store, write, s) for s in ("SUCCESS", "FAILURE")]
        for thread in threads:
            thread.start()
        start.wait()
        result_store.set(task_id, meta(task_id, "REVOKED", None))
        for thread in threads:
            thread.join()
        assert result_store.get(task_id)["status"] == "REVOKED"


def test_reading_a_result_never_imports_what_it_names(result_store: ResultStore,
                                                      tmp_path: Any,
                                                      monkeypatch: Any) -> None:
    """CVE-2021-23727: a stored exception naming any module and class (written by whoever
    can write to the store) is read back as text, never imported or instantiated."""
    import sys

    from celeriac import Celery
    from celeriac.exceptions import RemoteTaskError

    canary = f"celeriac_cve_canary_{new_id()}"
    touched = tmp_path / "imported"
    (tmp_path / f"{canary}.py").write_text(
        f"open({str(touched)!r}, 'w').close()\nclass Evil(Exception):\n"
        f"    def __init__(self, *a):\n        open({str(touched)!r}, 'a').write('built')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    app = Celery("cve", broker="memory://", set_as_current=False)
    app._backend = result_store
    cases = {canary: "Evil", "os": "system", "subprocess": "Popen", "builtins": "eval",
             "posix": "system"}
    for module, name in cases.items():
        task_id = new_id()
        result_store.set(task_id, meta(task_id, status="FAILURE", result={
            "exc_type": name, "exc_module": module, "exc_message": ["rm -rf /tmp/x"]}))
        result = app.AsyncResult(task_id)
        assert result.state == "FAILURE"
        exc = result.result
        assert isinstance(exc, RemoteTaskError), (module, name, exc)
        assert (exc.exc_type, exc.exc_module) == (name, module)
        assert f"{module}.{name}" in str(exc) or name in str(exc)
        try:
            result.get(timeout=1)
        except RemoteTaskError:
            pass
        else:
            raise AssertionError("get() must raise the failure")
    assert canary not in sys.modules
    assert not touched.exists()
