"""A real Pyramid app (WebTest): tasks sent from views wait for the request's commit."""

from __future__ import annotations

from typing import Any

from pyramidsite import Site


def _queued(app: Any) -> list[Any]:
    """The messages waiting in the site's broker (celery queue), oldest first."""
    from celeriac.contrib.pyramid import celery_app

    broker = celery_app.broker
    got = broker.receive(["celery"], owner="test", limit=100, timeout=0)
    return [d.message for d in got]


def test_view_commit_sends_after_commit_and_drops_the_request(webapp: Any, site: Site) -> None:
    response = webapp.post("/order", {"phone": "+358400000001"})
    delivery_id = response.json["delivery_id"]
    messages = _queued(webapp)
    names = sorted(m.task_name for m in messages)
    assert names == ["trees.tasks.plain_note", "trees.tasks.send_review_sms_notification"]
    sms = next(m for m in messages if m.task_name.endswith("send_review_sms_notification"))
    from celeriac.messages import decode_body

    args, kwargs, _embed = decode_body(sms)
    assert args == [delivery_id] and kwargs == {}  # the request was taken off
    plain = next(m for m in messages if m.task_name.endswith("plain_note"))
    assert plain.task_id == response.json["plain_task_id"]
    assert site.rows("SELECT id FROM delivery") == [(delivery_id,)]


def test_view_that_aborts_sends_nothing(webapp: Any, site: Site) -> None:
    webapp.post("/order-aborted", {"phone": "+358400000002"}, status=409)
    assert _queued(webapp) == []
    assert site.rows("SELECT id FROM delivery") == []


def test_doomed_transaction_sends_nothing(webapp: Any, site: Site) -> None:
    webapp.get("/note-aborted")
    assert _queued(webapp) == []
    assert site.rows("SELECT text FROM note") == []


def test_after_commit_hook_on_sqlite(webapp: Any) -> None:
    response = webapp.post("/order", {"phone": "+358400000009"})
    assert response.json["after_commit_hooks"] == 2  # SQLite broker: a hook per publish
