"""Enqueue after commit: ``delay_on_commit``, the HackSoft ``on_commit`` pattern, and the
transactional outbox, in this process on the project's SQLite database (and the outbox
on PostgreSQL through the ``pg`` alias when it is up)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


class Boom(Exception):
    pass


@pytest.fixture
def proj(dj: Any) -> Iterator[Any]:
    """The project's app with an empty default queue; outbox settings restored after."""
    app = dj.app
    saved = {k: app.conf[k] for k in ("task_outbox", "task_outbox_database")}
    app.broker.purge(app.conf.task_default_queue)
    yield app
    app.conf.update(saved)
    app.broker.purge(app.conf.task_default_queue)


def waiting(app: Any) -> int:
    return app.broker.stats(app.conf.task_default_queue).ready


def messages(app: Any) -> list[Any]:
    got = app.broker.receive([app.conf.task_default_queue], owner="test", limit=100, timeout=0)
    app.broker.ack(got)
    return got


def new_order(name: str) -> Any:
    from shop.models import Order

    return Order.objects.create(name=name)


def test_delay_on_commit_sends_only_after_commit(proj: Any) -> None:
    from django.db import transaction
    from shop.tasks import process_order

    with transaction.atomic():
        order = new_order("on-commit-1")
        assert process_order.delay_on_commit(order.id) is None
        process_order.apply_async_on_commit((order.id,), countdown=0)
        assert waiting(proj) == 0
    assert waiting(proj) == 2
    [first, _second] = messages(proj)
    assert first.message.task_name == "shop.tasks.process_order"


def test_delay_on_commit_sends_nothing_on_rollback(proj: Any) -> None:
    from django.db import transaction
    from shop.tasks import process_order

    with pytest.raises(Boom), transaction.atomic():
        order = new_order("on-commit-rollback")
        process_order.delay_on_commit(order.id)
        raise Boom()
    assert waiting(proj) == 0
    with transaction.atomic():  # a rolled back savepoint drops its callbacks only
        try:
            with transaction.atomic():
                process_order.delay_on_commit(1)
                raise Boom()
        except Boom:
            pass
        process_order.delay_on_commit(2)
    assert [m.message.headers["argsrepr"] for m in messages(proj)] == ["(2,)"]


def test_hacksoft_on_commit_pattern(proj: Any) -> None:
    from django.db import transaction
    from shop.tasks import user_complete_onboarding

    user_complete_onboarding("a@example.com")
    assert waiting(proj) == 1
    with pytest.raises(Boom), transaction.atomic():
        user_complete_onboarding("b@example.com")
        raise Boom()
    assert waiting(proj) == 1


def test_delay_on_commit_without_a_transaction_integration_is_refused() -> None:
    from celeriac import Celery, hooks

    app = Celery("plain", broker="memory://")
    add = app.task(lambda x, y: x + y, name="add")
    saved = hooks._on_commit
    hooks.register_on_commit(None)
    try:
        with pytest.raises(RuntimeError, match="transaction integration"):
            add.delay_on_commit(1, 2)
    finally:
        hooks.register_on_commit(saved)


# -- the outbox --------------------------------------------------------------------------
@pytest.fixture(params=["default", "pg"])
def outbox(request: pytest.FixtureRequest, proj: Any) -> Iterator[str]:
    """The outbox on, on SQLite (``default``) or PostgreSQL (``pg``)."""
    from django.db import connections

    if request.param not in connections:
        from djangosite import require_postgres

        require_postgres()
        pytest.skip("PostgreSQL alias not configured")
    proj.conf.task_outbox = True
    proj.conf.task_outbox_database = request.param
    yield request.param


def outbox_rows(alias: str) -> list[Any]:
    from celeriac.contrib.django.models import OutboxMessage

    return list(OutboxMessage.objects.using(alias).order_by("id"))


def test_outbox_writes_in_the_transaction_and_relays_after_commit(proj: Any,
                                                                  outbox: str) -> None:
    from django.db import transaction
    from shop.tasks import email_send

    before = len(outbox_rows(outbox))
    with transaction.atomic(using=outbox):
        result = email_send.delay(41)
        rows = outbox_rows(outbox)
        assert len(rows) == before + 1 and rows[-1].task_id == result.id
        assert rows[-1].sent_at is None
        assert waiting(proj) == 0  # nothing reached the broker yet
    [sent] = messages(proj)
    assert sent.message.task_id == result.id
    assert sent.message.headers["celeriac_outbox"] == f"{outbox}:{rows[-1].pk}:1"
    row = outbox_rows(outbox)[-1]
    assert row.sent_at is not None and row.attempts == 1


def test_outbox_rollback_sends_nothing(proj: Any, outbox: str) -> None:
    from django.db import transaction
    from shop.tasks import email_send

    before = len(outbox_rows(outbox))
    with pytest.raises(Boom), transaction.atomic(using=outbox):
        email_send.delay(42)
        raise Boom()
    assert len(outbox_rows(outbox)) == before
    assert waiting(proj) == 0


def test_outside_a_transaction_the_outbox_is_bypassed(proj: Any, outbox: str) -> None:
    from shop.tasks import email_send

    before = len(outbox_rows(outbox))
    email_send.delay(43)
    assert len(outbox_rows(outbox)) == before
    assert waiting(proj) == 1


def test_group_members_go_through_the_outbox(proj: Any, outbox: str) -> None:
    from django.db import transaction
    from shop.tasks import email_send

    from celeriac import group

    with transaction.atomic(using=outbox):
        group(email_send.s(i) for i in range(3)).apply_async()
        assert waiting(proj) == 0
    assert sorted(m.message.headers["argsrepr"] for m in messages(proj)) == [
        "(0,)", "(1,)", "(2,)"]


def test_relay_publishes_what_the_committer_could_not(proj: Any, outbox: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db import transaction
    from shop.tasks import email_send

    from celeriac.contrib.django.outbox import Relay

    broker = proj.broker
    real = broker.publish_many

    def down(items: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(broker, "publish_many", down)
    with transaction.atomic(using=outbox):
        result = email_send.delay(44)
    assert waiting(proj) == 0
    row = outbox_rows(outbox)[-1]
    assert row.task_id == result.id and row.sent_at is None and row.claim is None
    monkeypatch.setattr(broker, "publish_many", real)
    relay = Relay(proj, outbox)
    assert relay.run_once() == 1
    assert relay.run_once() == 0
    [sent] = messages(proj)
    assert sent.message.task_id == result.id
    assert sent.message.headers["celeriac_outbox"].endswith(":2")  # the second attempt


def test_a_second_publish_of_one_row_is_dropped_by_workers(proj: Any, outbox: str) -> None:
    from django.db import transaction
    from shop.tasks import email_send

    from celeriac.app.request import parse_request as parse_task
    from celeriac.contrib.django.outbox import admit

    with transaction.atomic(using=outbox):
        email_send.delay(45)
    [sent] = messages(proj)
    first = parse_task(sent.message, None)
    pk = outbox_rows(outbox)[-1].pk
    second = parse_task(sent.message.with_headers(celeriac_outbox=f"{outbox}:{pk}:2"), None)
    assert admit(proj, first) is None
    assert admit(proj, first) is None  # a redelivery of the accepted copy still runs
    assert "duplicate publish" in (admit(proj, second) or "")
    foreign = parse_task(sent.message.with_headers(celeriac_outbox="nowhere:1:1"), None)
    assert admit(proj, foreign) is None


def test_kuma_pattern_enqueue_assertions_see_the_commit(proj: Any) -> None:
    """docs/testing.md: what waits in the broker, not what was called, before and after
    the commit (eager mode would have run the task inside the transaction)."""
    from django.db import transaction
    from shop.tasks import process_order

    from celeriac.contrib.testing.enqueued import assert_enqueued, refute_enqueued

    with transaction.atomic():
        order = new_order("kuma-pattern")
        process_order.delay_on_commit(order.id)
        refute_enqueued(process_order, app=proj)
    [waiting_task] = assert_enqueued(process_order, args=(order.id,), app=proj)
    assert waiting_task.queue == proj.conf.task_default_queue
