"""``result_backend = 'django-db'``: results in the admin (Django's test client, a logged-in
superuser), its filters, search, retry and revoke actions, expiry by ``celeriac results
cleanup`` and the daily ``celery.backend_cleanup`` entry, and index use at scale."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

ADMIN = "/admin/celeriac_results/taskresult/"


@pytest.fixture
def client(dj: Any) -> Iterator[Any]:
    from django.contrib.auth.models import User
    from django.test import Client

    user = User.objects.create_superuser(f"admin-{uuid.uuid4().hex[:8]}", "a@example.com",
                                         "secret")
    browser = Client()
    browser.force_login(user)
    yield browser
    user.delete()


def meta(task_id: str, status: str, result: Any, **extra: Any) -> dict[str, Any]:
    done = datetime.now(timezone.utc).isoformat() if status in ("SUCCESS", "FAILURE") else None
    return {"status": status, "result": result, "traceback": extra.pop("traceback", None),
            "children": [], "date_done": done, "task_id": task_id, **extra}


@pytest.fixture
def stored(dj: Any) -> dict[str, str]:
    """Three results as a worker with ``result_extended`` stores them."""
    store = dj.app.backend
    ids = {state: uuid.uuid4().hex for state in ("SUCCESS", "FAILURE", "STARTED")}
    store.set(ids["SUCCESS"], meta(ids["SUCCESS"], "SUCCESS", {"total": 42},
                                   name="shop.tasks.email_send", args=[7], kwargs={},
                                   worker="w1@host", retries=0, queue="celery"))
    store.set(ids["FAILURE"], meta(ids["FAILURE"], "FAILURE", {
        "exc_type": "ValueError", "exc_message": ["bad order"], "exc_module": "builtins"},
        traceback="Traceback (most recent call last):\nValueError: bad order",
        name="shop.tasks.process_order", args=[1], kwargs={}, worker="w2@host"))
    store.set(ids["STARTED"], meta(ids["STARTED"], "STARTED", {"pid": 1},
                                   name="shop.tasks.process_order", args=[2], kwargs={}))
    return ids


def test_results_are_listed_in_the_admin(client: Any, stored: dict[str, str]) -> None:
    page = client.get(ADMIN)
    assert page.status_code == 200
    html = page.content.decode()
    for task_id in stored.values():
        assert task_id in html
    assert "shop.tasks.email_send" in html and "w1@host" in html


def test_admin_filters_and_search(client: Any, stored: dict[str, str]) -> None:
    failed = client.get(ADMIN, {"status__exact": "FAILURE"}).content.decode()
    assert stored["FAILURE"] in failed and stored["SUCCESS"] not in failed
    by_task = client.get(ADMIN, {"task_name": "shop.tasks.email_send"}).content.decode()
    assert stored["SUCCESS"] in by_task and stored["FAILURE"] not in by_task
    midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    today = client.get(ADMIN, {"date_done__gte": midnight.isoformat()})
    assert stored["SUCCESS"] in today.content.decode()
    found = client.get(ADMIN, {"q": stored["FAILURE"]}).content.decode()
    assert stored["FAILURE"] in found and stored["SUCCESS"] not in found


def test_admin_detail_shows_result_and_traceback(client: Any, stored: dict[str, str]) -> None:
    from celeriac.contrib.django.results.models import TaskResult

    row = TaskResult.objects.get(task_id=stored["FAILURE"])
    page = client.get(f"{ADMIN}{row.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "bad order" in html and "Traceback" in html


def test_admin_revoke_action(dj: Any, client: Any, stored: dict[str, str]) -> None:
    from celeriac.contrib.django.results.models import TaskResult

    row = TaskResult.objects.get(task_id=stored["STARTED"])
    page = client.post(ADMIN, {"action": "revoke_tasks", "_selected_action": [row.pk]},
                       follow=True)
    assert page.status_code == 200 and "Revoked 1 task" in page.content.decode()
    assert dj.app.AsyncResult(stored["STARTED"]).state == "REVOKED"


def test_admin_retry_action_sends_the_task_again(dj: Any, client: Any,
                                                 stored: dict[str, str]) -> None:
    from celeriac.contrib.django.results.models import TaskResult

    app = dj.app
    app.broker.purge(app.conf.task_default_queue)
    row = TaskResult.objects.get(task_id=stored["SUCCESS"])
    page = client.post(ADMIN, {"action": "retry_tasks", "_selected_action": [row.pk]},
                       follow=True)
    assert "Sent 1 task(s) again" in page.content.decode()
    [got] = app.broker.receive([app.conf.task_default_queue], owner="t", limit=5, timeout=1)
    app.broker.ack([got])
    assert got.message.task_name == "shop.tasks.email_send"
    assert got.message.headers["argsrepr"] == "(7,)"


def test_group_results_in_the_admin(dj: Any, client: Any) -> None:
    group_id = uuid.uuid4().hex
    dj.app.backend.save_group(group_id, {"result": [["a", None]], "group_id": group_id})
    page = client.get("/admin/celeriac_results/groupresult/")
    assert page.status_code == 200 and group_id in page.content.decode()


def test_cleanup_command_and_daily_entry(dj: Any) -> None:
    from click.testing import CliRunner

    from celeriac.cli import cli
    from celeriac.cli.base import CLIContext
    from celeriac.contrib.django.results.models import TaskResult

    app = dj.app
    gone, kept = uuid.uuid4().hex, uuid.uuid4().hex
    app.backend.set(gone, meta(gone, "SUCCESS", 1), expires=0.01)
    app.backend.set(kept, meta(kept, "SUCCESS", 1))
    import time

    time.sleep(0.05)
    out = CliRunner().invoke(cli, ["results", "cleanup"], obj=CLIContext(None, None, None,
                                                                          _app=app))
    assert out.exit_code == 0, out.output
    assert "removed" in out.output
    assert not TaskResult.objects.filter(task_id=gone).exists()
    assert TaskResult.objects.filter(task_id=kept).exists()
    entry = app.conf.beat_schedule["celery.backend_cleanup"]
    assert entry["task"] == "celery.backend_cleanup"
    assert "celery.backend_cleanup" in app.tasks
    assert app.tasks["celery.backend_cleanup"].apply().get() >= 0


def test_admin_queries_use_indexes(client: Any, stored: dict[str, str]) -> None:
    """The changelist's queries (default order, state and task filters) read an index."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    if connection.vendor != "sqlite":
        pytest.skip("the plan check reads SQLite's EXPLAIN QUERY PLAN")
    for params in ({}, {"status__exact": "FAILURE"}, {"task_name": "shop.tasks.email_send"}):
        with CaptureQueriesContext(connection) as captured:
            assert client.get(ADMIN, params).status_code == 200
        selects = [q["sql"] for q in captured.captured_queries
                   if "celeriac_results_taskresult" in q["sql"] and "ORDER BY" in q["sql"]]
        assert selects, params
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN QUERY PLAN " + selects[0])
            plan = " ".join(str(row[-1]) for row in cursor.fetchall())
        assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, (params, plan)
        assert "USE TEMP B-TREE FOR ORDER BY" not in plan, (params, plan)
