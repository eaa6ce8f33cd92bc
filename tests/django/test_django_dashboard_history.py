"""The dashboard's history in the Django project's database (``dashboard_history_url =
'django-db'``): a dashboard process on the test project, SQLite and PostgreSQL, and the
refusals at start-up. The history store's own behaviour on ``django-db`` is covered by
``tests/dashboard/test_history.py`` (its ``store`` fixture runs every test there on the
Django database too)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from djangosite import Site, wait_until

from celeriac.dashboard.history import HistoryStore, TaskFilter, open_database
from celeriac.exceptions import ImproperlyConfigured

DASHBOARD_TABLES = ("dashboard_tasks", "dashboard_attempts", "dashboard_audit",
                    "dashboard_meta", "dashboard_throughput")
SEND = """
import json, uuid
from shop.models import Order
from shop.tasks import process_order
order = Order.objects.create(name=uuid.uuid4().hex)
result = process_order.delay(order.id)
result.get(timeout=60)
print(json.dumps([result.id, order.id]))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except OSError:
        return 0, None


@contextmanager
def dashboard(site: Site, *args: str) -> Iterator[int]:
    port = free_port()
    proc = site.proc("-m", "celeriac", "-A", "proj", "dashboard", "--port", str(port),
                     "--history", "django-db", *args, name="dashboard")
    try:
        def up() -> bool:
            assert proc.popen.poll() is None, proc.log
            return get(port, "/healthz")[0] == 200

        wait_until(up, 60, what="the dashboard to answer")
        yield port
    finally:
        proc.stop()


def test_a_dashboard_keeps_its_history_in_the_django_database(site: Site) -> None:
    with site.running_worker("-P", "threads", "-c", "2", "-E"), dashboard(site) as port:
        # the dashboard listens before the task is sent (events are not kept)
        task_id, order_id = site.result(SEND)

        def shown() -> Any:
            status, body = get(port, f"/api/tasks/{task_id}")
            return status == 200 and body["state"] == "SUCCESS" and body
        task = wait_until(shown, 60, what="the task's history record")
        assert task["name"] == "shop.tasks.process_order"
        assert task["args"] == f"({order_id},)"
    rows = site.query("SELECT state, name FROM dashboard_tasks WHERE task_id = %s", (task_id,))
    assert rows == [("SUCCESS", "shop.tasks.process_order")]
    # the tables sit beside Django's own, in the same database
    assert site.query("SELECT COUNT(*) FROM celeriac_results_taskresult "
                      "WHERE task_id = %s", (task_id,)) == [(1,)]


def test_the_history_is_read_from_an_event_loop(dj: Any) -> None:
    """The dashboard's pages run on an event loop, where Django refuses database calls: the
    store's calls move to a helper thread."""
    from django.db import connections

    db = open_database("django-db")
    store = HistoryStore(db)
    try:
        store.apply_events([{"type": "task-sent", "uuid": "loop-1", "name": "proj.add",
                             "timestamp": 1.0, "args": "(1, 2)"}])

        async def page() -> list[str]:
            return [r.task_id for r in store.page(TaskFilter(), 10)[0]]

        assert asyncio.run(page()) == ["loop-1"]
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT task_id, state FROM dashboard_tasks")
            assert cursor.fetchall() == [("loop-1", "SENT")]
    finally:
        db.write(lambda cur: [cur.execute(f"DROP TABLE IF EXISTS {t}")
                              for t in DASHBOARD_TABLES])
        db.close()


def test_a_broken_connection_is_reopened(dj: Any) -> None:
    """A PostgreSQL connection that died (server restart, idle timeout) fails one call;
    the next one gets a new connection."""
    if "pg" not in dj.aliases:
        pytest.skip("PostgreSQL is not reachable")
    from django.db import connections

    db = open_database("django-db://pg")
    store = HistoryStore(db)
    try:
        store.apply_events([{"type": "task-sent", "uuid": "conn-1", "name": "proj.add",
                             "timestamp": 1.0}])
        connections["pg"].connection.close()  # behind Django's back
        with pytest.raises(Exception, match="closed"):
            store.count(TaskFilter())
        assert store.count(TaskFilter()) == 1
    finally:
        db.write(lambda cur: [cur.execute(f"DROP TABLE IF EXISTS {t}")
                              for t in DASHBOARD_TABLES])
        db.close()


def test_an_unknown_alias_or_database_is_refused(dj: Any, monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    from django.db import connections

    with pytest.raises(ImproperlyConfigured, match="DATABASES has no alias 'nope'"):
        open_database("django-db://nope")
    dummy = connections.configure_settings({"default": dict(connections.settings["default"]),
                                            "other": {"ENGINE": "django.db.backends.dummy"}})
    monkeypatch.setitem(connections.settings, "other", dummy["other"])
    with pytest.raises(ImproperlyConfigured,
                       match=r"needs SQLite or PostgreSQL; DATABASES\['other'\] is unknown"):
        open_database("django-db://other")


def test_without_django_settings_the_dashboard_names_the_setting(tmp_path: Any) -> None:
    (tmp_path / "plain.py").write_text("from celeriac import Celery\napp = Celery('plain')\n"
                                       "app.conf.dashboard_history_url = 'django-db'\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "CELERIAC_BROKER_URL", "CELERIAC_APP")}
    env["CELERIAC_SQLITE_PATH"] = str(tmp_path / "broker.sqlite3")
    done = subprocess.run([sys.executable, "-m", "celeriac", "-A", "plain", "dashboard",
                           "--port", str(free_port())], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "dashboard_history_url = 'django-db'" in done.stderr
    assert "set DJANGO_SETTINGS_MODULE" in done.stderr
