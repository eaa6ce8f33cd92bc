"""Dashboard pages and actions through the HTML routes and the JSON API (memory broker)."""

from __future__ import annotations

import json
import re

from celeriac.dashboard.history import TaskFilter
from celeriac.dashboard.ingest import decode_event_message
from celeriac.messages import task_message
from celeriac.serialization import accepted_types, loads

from .conftest import csrf_of
from .test_history import IDS, published


def seed(board) -> None:  # type: ignore[no-untyped-def]
    for raw in published():
        for event in decode_event_message(raw):
            board.ingestor.handle(event)
    board.ingestor.flush()


def waiting(app, queue: str = "celery") -> list[tuple[str, list, dict]]:  # type: ignore[no-untyped-def]
    """(task name, args, kwargs) of every message waiting in ``queue``."""
    out = []
    for delivery in app.broker.receive([queue], owner="test", limit=100, timeout=0):
        body = loads(delivery.message.body, delivery.message.content_type,
                     accepted_types(["json"]))
        out.append((delivery.message.headers["task"], list(body[0]), dict(body[1])))
    return out


def htmx(client, path: str, data: dict | None = None):  # type: ignore[no-untyped-def]
    return client.post(path, data=data or {}, headers={"X-CSRF-Token": csrf_of(client),
                                                       "HX-Request": "true"})


def test_every_page_renders(client, board) -> None:  # type: ignore[no-untyped-def]
    seed(board)
    board.app.schedules.add("tick", "dash.add", 30, args=(1, 2))
    for path in ("/", "/fragments/overview", "/tasks", "/tasks?state=FAILURE",
                 f"/tasks/{IDS['retry_once']}", "/workers", "/queues", "/schedules",
                 "/deadletters", "/audit", "/metrics", "/api/openapi.json"):
        response = client.get(path)
        assert response.status_code == 200, path
    assert "capture_app.fail" in client.get("/tasks?state=FAILURE").text
    assert "capture_app.add" not in client.get("/tasks?state=FAILURE").text
    detail = client.get(f"/tasks/{IDS['retry_once']}").text
    assert "RuntimeError" in detail and "celery@capture" in detail
    assert detail.count("<tr><td>") >= 2  # two attempts listed
    assert "celery@capture" in client.get("/workers").text
    assert "tick" in client.get("/schedules").text
    assert client.get("/tasks/nope").status_code == 404
    assert client.get("/tasks?since=yesterday").status_code == 400
    overview = client.get("/").text
    assert "<svg" in overview and "htmx.min.js" in overview
    assert "cdn" not in overview.lower() and "https://" not in overview


def test_task_pages_are_paged_and_filtered(client, board) -> None:  # type: ignore[no-untyped-def]
    seed(board)
    board.config.page_size = 4
    first = client.get("/tasks").text
    assert first.count('href="/tasks/') >= 4
    older = re.search(r'id="older" href="([^"]+)"', first)
    assert older is not None
    second = client.get(older.group(1).replace("&amp;", "&")).text
    ids_first = set(re.findall(r'href="/tasks/([0-9a-f-]{36})"', first))
    ids_second = set(re.findall(r'href="/tasks/([0-9a-f-]{36})"', second))
    assert len(ids_first | ids_second) == 6 and not ids_first & ids_second
    api = client.get("/api/tasks", params={"name": "capture_app.add", "limit": 1}).json()
    assert len(api["tasks"]) == 1 and api["next"]
    rest = client.get("/api/tasks", params={"name": "capture_app.add",
                                            "before": api["next"]}).json()
    assert len(rest["tasks"]) == 1 and rest["next"] is None
    assert client.get("/api/tasks/count", params={"text": "boom"}).json() == {"count": 1}


def test_retry_sends_the_same_task_again(client, board) -> None:  # type: ignore[no-untyped-def]
    seed(board)
    response = htmx(client, f"/tasks/{IDS['fail']}/retry")
    assert response.status_code == 200 and "Sent again as" in response.text
    new_id = re.search(r'href="/tasks/([^"]+)"', response.text).group(1)  # type: ignore[union-attr]
    assert waiting(board.app) == [("capture_app.fail", ["boom"], {})]
    record = board.history.get(new_id)
    assert record.retried_from == IDS["fail"] and record.state == "SENT"
    assert new_id in client.get(f"/tasks/{IDS['fail']}").text
    entry = board.history.audit_log()[0]
    assert (entry.user, entry.action, entry.target) == ("local", "retry", f"task {IDS['fail']}")


def test_retry_with_edited_arguments(client, board) -> None:  # type: ignore[no-untyped-def]
    seed(board)
    response = htmx(client, f"/tasks/{IDS['add']}/retry",
                    {"edited": "1", "args": "[40, 2]", "kwargs": "{}"})
    assert response.status_code == 200
    assert waiting(board.app) == [("capture_app.add", [40, 2], {})]
    assert board.history.audit_log()[0].action == "retry-edited"
    bad = htmx(client, f"/tasks/{IDS['add']}/retry", {"edited": "1", "args": "{oops"})
    assert bad.status_code == 400 and "not valid JSON" in bad.text
    via_api = client.post(f"/api/tasks/{IDS['add']}/retry", json={"args": [1], "kwargs": {"y": 2}},
                          headers={"X-CSRF-Token": csrf_of(client)})
    assert via_api.status_code == 200
    assert waiting(board.app) == [("capture_app.add", [1], {"y": 2})]


def test_retry_refuses_to_guess_arguments(client, board) -> None:  # type: ignore[no-untyped-def]
    seed(board)
    record = board.history.get(IDS["add"])
    record.args = "(<object object at 0x7f>,)"
    board.history.put(record)
    response = client.post(f"/api/tasks/{IDS['add']}/retry", json={},
                           headers={"X-CSRF-Token": csrf_of(client)})
    assert response.status_code == 409 and "edited arguments" in response.json()["error"]
    assert waiting(board.app) == []


def test_bulk_actions_confirm_the_count(client, board) -> None:  # type: ignore[no-untyped-def]
    seed(board)
    confirm = htmx(client, "/tasks/bulk/confirm", {"action": "retry", "state": "FAILURE"})
    assert "Retry 2 tasks" in confirm.text
    stale = htmx(client, "/tasks/bulk", {"action": "retry", "state": "FAILURE",
                                         "confirmed": "3"})
    assert stale.status_code == 409 and waiting(board.app) == []
    done = htmx(client, "/tasks/bulk", {"action": "retry", "state": "FAILURE",
                                        "confirmed": "2"})
    assert done.status_code == 200 and "2 of 2 done" in done.text
    assert sorted(w[0] for w in waiting(board.app)) == ["capture_app.fail",
                                                         "capture_app.retry_once"]
    count = client.get("/api/tasks/count", params={"state": "REJECTED"}).json()["count"]
    api = client.post("/api/tasks/bulk", json={"action": "revoke", "filter": {
        "state": "REJECTED"}, "confirm": count}, headers={"X-CSRF-Token": csrf_of(client)})
    assert api.json()["done"] == 1
    assert board.app.backend.get(IDS["reject"])["status"] == "REVOKED"
    forget = htmx(client, "/tasks/bulk", {"action": "purge", "name": "capture_app.add",
                                          "confirmed": "2"})
    assert "2 of 2" in forget.text
    assert board.history.count(TaskFilter(name="capture_app.add")) == 0
    assert [e.action for e in board.history.audit_log()][:3] == [
        "bulk-purge", "bulk-revoke", "revoke"]
    nothing = client.post("/api/tasks/bulk", json={"action": "retry", "filter": {},
                                                   "confirm": 0},
                          headers={"X-CSRF-Token": csrf_of(client)})
    assert nothing.status_code == 400 and "needs a filter" in nothing.json()["error"]


def test_revoke_and_terminate(client, board) -> None:  # type: ignore[no-untyped-def]
    seed(board)
    htmx(client, f"/tasks/{IDS['add']}/revoke", {"terminate": "1"})
    meta = board.app.backend.get(IDS["add"])
    assert meta["status"] == "REVOKED" and meta.get("terminate") == "SIGTERM"
    assert board.history.audit_log()[0].action == "terminate"


def test_schedules_enable_disable_run_edit(client, board) -> None:  # type: ignore[no-untyped-def]
    schedules = board.app.schedules
    schedules.add("tick", "dash.add", 30, args=(1, 2))
    assert htmx(client, "/schedules/tick/disable").headers["HX-Redirect"] == "/schedules"
    assert not schedules.get("tick").enabled
    assert "tick disabled" in client.get("/schedules").text  # the flash message
    htmx(client, "/schedules/tick/enable")
    assert schedules.get("tick").enabled
    htmx(client, "/schedules/tick/edit", {"schedule": "cron */5 * * * *", "args": "[5, 6]",
                                          "kwargs": "{}"})
    info = schedules.get("tick")
    assert info.schedule == "cron */5 * * * *" and info.args == (5, 6)
    htmx(client, "/schedules/tick/run")
    assert waiting(board.app) == [("dash.add", [5, 6], {})]
    bad = htmx(client, "/schedules/tick/edit", {"schedule": "whenever"})
    assert bad.status_code == 400
    api = client.post("/api/schedules/tick", json={"action": "edit", "schedule": "every 10s"},
                      headers={"X-CSRF-Token": csrf_of(client)})
    assert api.status_code == 200 and schedules.get("tick").schedule == "every 10s"
    missing = client.post("/api/schedules/nope", json={"action": "run"},
                          headers={"X-CSRF-Token": csrf_of(client)})
    assert missing.status_code == 404
    assert {e.action for e in board.history.audit_log()} >= {
        "schedule-disable", "schedule-enable", "schedule-edit", "schedule-run"}


def test_dead_letters_retry_and_purge(client, board) -> None:  # type: ignore[no-untyped-def]
    broker = board.app.broker
    for i in range(3):
        broker.dead_letter_message(task_message("dash.add", f"dead-{i}", (i, i)), "celery",
                                   "decode_error: args" if i else "worker_lost")
    page = client.get("/deadletters?reason=decode").text
    assert "dead-1" in page and "dead-2" in page and "dead-0" not in page
    confirm = htmx(client, "/deadletters/confirm", {"action": "retry", "reason": "decode"})
    assert "Retry 2 dead letters" in confirm.text
    htmx(client, "/deadletters/retry", {"reason": "decode"})
    assert sorted(w[1] for w in waiting(board.app)) == [[1, 1], [2, 2]]
    listed = client.get("/api/deadletters").json()["dead_letters"]
    assert [d["task_id"] for d in listed] == ["dead-0"]
    htmx(client, "/deadletters/retry", {"id": listed[0]["id"]})
    assert waiting(board.app) == [("dash.add", [0, 0], {})]
    broker.dead_letter_message(task_message("dash.add", "dead-9", ()), "other", "x")
    htmx(client, "/deadletters/purge", {"queue": "other"})
    assert broker.dead_letters(None) == []
    assert htmx(client, "/deadletters/retry", {"id": "missing"}).status_code == 404


def test_queues_page_and_purge(client, board) -> None:  # type: ignore[no-untyped-def]
    seed(board)
    board.config.queue_targets = {"celery": 0.001}
    for i in range(3):
        board.app.send_task("dash.add", (i, i))
    queues = {q["queue"]: q for q in client.get("/api/queues").json()["queues"]}
    assert queues["celery"]["ready"] == 3
    assert queues["celery"]["time_to_start_p95"] is None  # capture is older than an hour
    assert "Purge 3 waiting messages" in htmx(client, "/queues/celery/confirm").text
    htmx(client, "/queues/celery/purge")
    assert board.app.broker.stats("celery").ready == 0
    assert board.history.audit_log()[0].action == "purge-queue"


def test_openapi_describes_every_api_route(client) -> None:  # type: ignore[no-untyped-def]
    spec = client.get("/api/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    app = client.app
    served = {(m.lower(), r.path) for r in app.routes if getattr(r, "path", "").startswith(
        "/api/") and r.path != "/api/openapi.json" for m in r.methods if m != "HEAD"}
    described = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert served == described
    assert json.dumps(spec)  # serializable as is


def test_metrics_and_health(client, board) -> None:  # type: ignore[no-untyped-def]
    seed(board)
    board.app.send_task("dash.add", (1, 1))
    text = client.get("/metrics").text
    assert 'celeriac_queue_messages{queue="celery",state="ready"} 1' in text
    assert "celeriac_workers_up 0" in text
    health = client.get("/healthz").json()
    assert health["status"] == "ok"


def test_result_store_fills_unfinished_records(client, board) -> None:  # type: ignore[no-untyped-def]
    seed(board)
    response = htmx(client, f"/tasks/{IDS['add']}/retry")
    new_id = re.search(r'href="/tasks/([^"]+)"', response.text).group(1)  # type: ignore[union-attr]
    board.app.backend.set(new_id, {"status": "SUCCESS", "result": 4, "task_id": new_id,
                                   "date_done": None})
    board.app.backend._set_raw(board.app.backend.task_key("broken"), '{"status": 1}', None)
    assert board.ingestor.refresh([new_id, "broken"]) == 1
    record = board.history.get(new_id)
    assert record.state == "SUCCESS" and record.result == "4" and record.finished_at
