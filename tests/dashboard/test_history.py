"""The history store: Celery's golden events folded into records, pages, retention (SQLite,
PostgreSQL, and both through the Django project's database: ``django-db``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tests.conftest import PG_BASE_URL

from celeriac.dashboard.history import HistoryStore, TaskFilter, TaskRecord, open_database
from celeriac.dashboard.ingest import Ingestor, decode_event_message

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "events-redis.json"
CAPTURE = json.loads(FIXTURE.read_text())
IDS = CAPTURE["captured"]["task_ids"]


def published() -> list[str]:
    """The raw PUBLISH payloads of the capture, as a Redis subscriber receives them."""
    return [m["args"][1] for m in CAPTURE["messages"]]


#: the dashboard's tables, dropped after each test on a shared Django database
DASHBOARD_TABLES = ("dashboard_tasks", "dashboard_attempts", "dashboard_audit",
                    "dashboard_meta", "dashboard_throughput")


@pytest.fixture(params=["sqlite", "postgres", "django-sqlite", "django-postgres"])
def store(request, tmp_path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        db = open_database(f"sqlite:///{tmp_path}/history.sqlite3")
        yield HistoryStore(db)
        db.close()
    elif request.param.startswith("django"):
        # the history in the Django project's database (dashboard_history_url = 'django-db')
        django = request.getfixturevalue("django_inprocess")
        alias = "default" if request.param == "django-sqlite" else "pg"
        if alias not in django.aliases:
            pytest.skip("PostgreSQL is not reachable")
        db = open_database("django-db" if alias == "default" else f"django-db://{alias}")
        assert db.kind == ("sqlite" if alias == "default" else "postgres")
        yield HistoryStore(db)
        db.write(lambda cur: [cur.execute(f"DROP TABLE IF EXISTS {table}")
                              for table in DASHBOARD_TABLES])
        db.close()
    else:
        schema_ctx = request.getfixturevalue("pg_schema")
        db = open_database(f"{PG_BASE_URL}?schema={schema_ctx}")
        yield HistoryStore(db)
        db.close()


def ingest_capture(store: HistoryStore) -> Ingestor:
    ingestor = Ingestor(store)
    for raw in published():
        assert ingestor.handle_message(raw) >= 1
    ingestor.flush()
    return ingestor


def test_decode_accepts_kombu_envelopes_and_plain_bodies() -> None:
    events = [e for raw in published() for e in decode_event_message(raw)]
    assert {e["type"] for e in events} >= {"task-sent", "task-received", "task-started",
                                            "task-succeeded", "task-failed", "task-retried",
                                            "task-rejected", "task-revoked", "worker-online",
                                            "worker-heartbeat", "worker-offline"}
    plain = json.dumps(events[1])  # an AMQP body is the JSON itself
    assert decode_event_message(plain) == [events[1]]
    assert decode_event_message(b"not json") == []
    assert decode_event_message(json.dumps([{"no": "type"}])) == []


def test_golden_events_build_the_right_records(store: HistoryStore) -> None:
    ingestor = ingest_capture(store)
    add = store.get(IDS["add"])
    assert add is not None
    assert (add.state, add.name, add.args, add.result, add.queue, add.worker) == (
        "SUCCESS", "capture_app.add", "(2, 2)", "4", "celery", "celery@capture")
    assert add.sent_at and add.received_at and add.started_at and add.finished_at
    assert add.time_to_start is not None and add.time_to_start >= 0
    fail = store.get(IDS["fail"])
    assert fail is not None and fail.state == "FAILURE"
    assert fail.exception == "ValueError('boom')" and "Traceback" in (fail.traceback or "")
    retried = store.get(IDS["retry_once"])
    assert retried is not None and retried.retries == 1 and retried.state == "FAILURE"
    attempts = store.attempts(IDS["retry_once"])
    assert [a.attempt for a in attempts] == [0, 1]
    assert attempts[0].state == "RETRY" and attempts[1].state == "FAILURE"
    assert all(a.worker == "celery@capture" for a in attempts)
    assert store.get(IDS["reject"]).state == "REJECTED"  # type: ignore[union-attr]
    expired = store.get(IDS["expired"])
    assert expired is not None and expired.state == "REVOKED" and expired.exception == "expired"
    terminated = store.get(IDS["terminated"])
    assert terminated is not None and terminated.state == "REVOKED"
    assert "signal 9" in (terminated.exception or "")
    workers = ingestor.worker_list()
    assert [w["hostname"] for w in workers] == ["celery@capture"]
    assert workers[0]["online"] is False and workers[0]["processed"] == 6


def test_out_of_order_events_keep_the_final_state(store: HistoryStore) -> None:
    events = [e for raw in published() for e in decode_event_message(raw)]
    mine = [e for e in events if e.get("uuid") == IDS["add"]]
    store.apply_events(list(reversed(mine)))  # each event in its own order...
    for event in reversed(mine):
        store.apply_events([event])  # ...and one by one, newest first
    add = store.get(IDS["add"])
    assert add is not None and add.state == "SUCCESS" and add.name == "capture_app.add"


def test_filters_pages_and_counts(store: HistoryStore) -> None:
    ingest_capture(store)
    assert store.count(TaskFilter()) == 6
    assert store.count(TaskFilter(states=["FAILURE"])) == 2
    assert store.count(TaskFilter(name="capture_app.a*")) == 2  # add and the expired add
    assert store.count(TaskFilter(name="capture_app.fail")) == 1
    assert store.count(TaskFilter(text="boom")) == 1
    assert store.count(TaskFilter(text="%")) == 0  # LIKE wildcards are escaped
    assert store.count(TaskFilter(worker="celery@capture", queue="celery")) == 6
    assert store.count(TaskFilter(worker="other@host")) == 0
    page1, more = store.page(TaskFilter(), limit=4)
    assert len(page1) == 4 and more
    last = page1[-1]
    page2, more2 = store.page(TaskFilter(), limit=4, before=(last.ts, last.task_id))
    assert len(page2) == 2 and not more2
    assert not {r.task_id for r in page1} & {r.task_id for r in page2}
    assert [r.ts for r in page1 + page2] == sorted((r.ts for r in page1 + page2), reverse=True)


def test_retention_by_age_and_count(store: HistoryStore) -> None:
    now = time.time()
    for i in range(10):
        store.put(TaskRecord(task_id=f"t{i}", name="x", state="SUCCESS", ts=now - 100 * i))
    assert store.prune(older_than=now - 450) == 5
    assert store.count(TaskFilter()) == 5
    assert store.prune(keep=3) == 2
    assert {r.task_id for r in store.page(TaskFilter())[0]} == {"t0", "t1", "t2"}


def test_audit_log(store: HistoryStore) -> None:
    store.audit("alice", "retry", "task abc", '{"new_id": "x"}')
    store.audit("bob", "revoke", "task def")
    log = store.audit_log()
    assert [(e.user, e.action) for e in log] == [("bob", "revoke"), ("alice", "retry")]


def test_history_survives_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/h.sqlite3"
    first = HistoryStore(open_database(url))
    ingest_capture(first)
    first.close()
    again = HistoryStore(open_database(url))
    assert again.count(TaskFilter()) == 6
    again.close()


def test_finished_tasks_are_counted_once_per_minute(store: HistoryStore) -> None:
    ingest_capture(store)
    ingest_capture(store)  # the same events again (a replay) count nothing new
    totals: dict[str, int] = {}
    for _, state, count in store.throughput(0, 3600):
        totals[state] = totals.get(state, 0) + count
    assert totals == {"SUCCESS": 1, "FAILURE": 2, "REJECTED": 1, "REVOKED": 2}


def test_several_states_page_like_one(store: HistoryStore) -> None:
    now = time.time()
    states = ["SUCCESS", "FAILURE", "RETRY", "STARTED"]
    for i in range(40):
        store.put(TaskRecord(task_id=f"t{i:02d}", name="x", state=states[i % 4],
                             ts=now - i if i % 5 else now - 1 - i + 0.5))
    flt = TaskFilter(states=["FAILURE", "RETRY"])
    expected = [r.task_id for r in sorted(
        (r for r in store.page(TaskFilter(), 100)[0] if r.state in flt.states),
        key=lambda r: (r.ts, r.task_id), reverse=True)]
    got, cursor = [], None
    while True:
        page, more = store.page(flt, 3, cursor)
        got += [r.task_id for r in page]
        if not more:
            break
        cursor = (page[-1].ts, page[-1].task_id)
    assert got == expected and len(got) == 20
    assert store.count(flt) == 20
    assert sorted(store.unfinished(now - 1000)) == sorted(
        f"t{i:02d}" for i in range(40) if states[i % 4] in ("RETRY", "STARTED"))


def test_a_foreign_exception_in_a_result_is_shown_as_text_never_imported() -> None:
    """The CVE-2021-23727 pattern: a stored exception naming an arbitrary module and class
    is rendered from the meta's text; nothing is imported or instantiated."""
    import sys

    from celeriac.dashboard.history.merge import apply_result

    record = TaskRecord(task_id="t-evil")
    meta = {"status": "FAILURE", "traceback": "Traceback ...",
            "result": {"exc_type": "EvilClass", "exc_module": "celeriac_test_never_imported",
                       "exc_message": ["rm -rf /"]}}
    assert apply_result(record, meta, time.time())
    assert record.state == "FAILURE"
    assert record.exception == "EvilClass('rm -rf /')"
    assert "celeriac_test_never_imported" not in sys.modules
