"""The outbox across crashes, with real processes on SQLite and PostgreSQL: a producer
killed (SIGKILL) between its commit and the publish, and a relay killed between its
publish and marking the row sent. Nothing committed is lost, nothing runs twice."""

from __future__ import annotations

from djangosite import Site, wait_until

COMMIT_THEN_DIE = """
import os, signal, uuid
from django.db import transaction
from shop.models import Order
from shop.tasks import process_order
with transaction.atomic():
    order = Order.objects.create(name=uuid.uuid4().hex)
    print(order.id, flush=True)
    # runs first after the commit, before the outbox's own on_commit publish
    transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))
    process_order.delay(order.id)
"""

RELAY_THEN_DIE = """
import os, signal
from celeriac.contrib.django.outbox import Relay
from proj.celery import app
broker = app.broker
real = broker.publish_many
def publish_then_die(items):
    real(items)
    os.kill(os.getpid(), signal.SIGKILL)  # published, never marked sent
broker.publish_many = publish_then_die
Relay(app).run_once()
"""


def broker_messages(site: Site) -> int:
    import sqlite3

    path = site.broker_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        try:
            return int(conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
        except sqlite3.OperationalError:  # nothing was ever published: no schema yet
            return 0


def commit_then_die(site: Site) -> int:
    done = site.python(COMMIT_THEN_DIE, check=False, CELERIAC_TEST_OUTBOX="1")
    assert done.returncode == -9, done.stdout + done.stderr
    return int(done.stdout.split()[0])


def order_runs(site: Site, order_id: int) -> int:
    return int(site.query("SELECT runs FROM shop_order WHERE id = %s", (order_id,))[0][0])


def outbox(site: Site) -> list[tuple[int, object, int, object]]:
    return site.query("SELECT id, sent_at, attempts, accepted_attempt FROM celeriac_outbox "
                      "ORDER BY id")


def test_producer_killed_between_commit_and_publish_loses_nothing(site: Site) -> None:
    order_id = commit_then_die(site)
    [(_, sent_at, attempts, _)] = outbox(site)
    assert sent_at is None and attempts == 0  # committed, never published
    assert broker_messages(site) == 0
    with site.running_worker("-P", "prefork", "-c", "2", CELERIAC_TEST_OUTBOX="1") as worker:
        wait_until(lambda: order_runs(site, order_id) == 1, 60, what="the task to run")
        wait_until(lambda: outbox(site)[0][1] is not None, 30, what="the row marked sent")
    assert order_runs(site, order_id) == 1
    assert "outbox: relay started" in worker.log


def test_relay_killed_between_publish_and_mark_runs_the_task_once(site: Site) -> None:
    order_id = commit_then_die(site)
    died = site.python(RELAY_THEN_DIE, check=False, CELERIAC_TEST_OUTBOX="1",
                       CELERIAC_TEST_OUTBOX_CLAIM="1")
    assert died.returncode == -9, died.stdout + died.stderr
    [(row_id, sent_at, attempts, _)] = outbox(site)
    assert sent_at is None and attempts == 1 and broker_messages(site) == 1
    # once the dead relay's claim lapses (1 s here), another relay publishes the row again
    def relay_once() -> bool:
        done = site.cli("outbox", "relay", "--once", CELERIAC_TEST_OUTBOX="1",
                        CELERIAC_TEST_OUTBOX_CLAIM="1")
        assert done.returncode == 0, done.stdout + done.stderr
        return "published 1 message" in done.stdout

    wait_until(relay_once, 60, interval=0.5, what="a second publish of the row")
    assert broker_messages(site) == 2  # two copies of one committed message
    with site.running_worker("-P", "threads", "-c", "2", CELERIAC_TEST_OUTBOX="1") as worker:
        wait_until(lambda: order_runs(site, order_id) >= 1, 60, what="the task to run")
        worker.wait_for(f"duplicate publish of outbox message {row_id}")
    assert order_runs(site, order_id) == 1
    assert outbox(site)[0][3] in (1, 2)
