"""The tutorial seed's project under real workers: ORM tasks in every pool, on SQLite and
PostgreSQL, ``manage.py celeriac worker`` and ``manage.py celeryd`` (Kuma's habit)."""

from __future__ import annotations

import pytest
from djangosite import Site

CREATE_AND_SEND = """
import json, uuid
from shop.models import Order
from shop.tasks import process_order
order = Order.objects.create(name=uuid.uuid4().hex)
result = process_order.delay(order.id)
print(json.dumps([order.id, result.get(timeout=60)]))
"""


def processed(site: Site, order_id: int) -> tuple[str, str, int]:
    [row] = site.query("SELECT status, processed_by, runs FROM shop_order WHERE id = %s",
                       (order_id,))
    return row[0], row[1], row[2]


def test_orm_task_through_a_prefork_worker(site: Site) -> None:
    with site.running_worker("-P", "prefork", "-c", "2", "-l", "INFO") as worker:
        order_ids = []
        for _ in range(3):
            order_id, runs = site.result(CREATE_AND_SEND)
            assert runs == 1
            order_ids.append(order_id)
        pids = {processed(site, oid)[1] for oid in order_ids}
    assert all(processed(site, oid)[0] == "processed" for oid in order_ids)
    assert all(pid.startswith("pid ") for pid in pids)
    assert "AppRegistryNotReady" not in worker.log
    # results went to the django-db store, with the extended fields
    rows = site.query("SELECT status, task_name, worker, date_started FROM "
                      "celeriac_results_taskresult WHERE task_name = %s",
                      ("shop.tasks.process_order",))
    assert len(rows) == 3
    assert all(r[0] == "SUCCESS" and r[2] and r[3] is not None for r in rows)


def test_async_orm_task_on_the_asyncio_pool(site: Site) -> None:
    site.python("""
from shop.models import Order
Order.objects.create(name="a1", status="paid")
Order.objects.create(name="a2", status="paid")
""")
    with site.running_worker("-P", "asyncio", "-c", "4"):
        count = site.result("""
import json
from shop.tasks import count_orders
print(json.dumps([count_orders.delay("paid").get(timeout=60) for _ in range(3)]))
""")
    assert count == [2, 2, 2]


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_orm_task_on_in_process_pools(sqlite_site: Site, pool: str) -> None:
    with sqlite_site.running_worker("-P", pool, "-c", "2"):
        order_id, runs = sqlite_site.result(CREATE_AND_SEND)
    assert runs == 1
    assert processed(sqlite_site, order_id)[0] == "processed"


def test_manage_py_celeriac_worker(sqlite_site: Site) -> None:
    proc = sqlite_site.proc("manage.py", "celeriac", "worker", "-P", "prefork", "-c", "1",
                            "-l", "INFO", name="manage-worker")
    proc.wait_for("ready.")
    try:
        _, runs = sqlite_site.result(CREATE_AND_SEND)
    finally:
        assert proc.stop() == 0
    assert runs == 1
    assert "app: proj" in proc.log


def test_manage_py_celeryd_is_a_worker(sqlite_site: Site) -> None:
    # Kuma's documented command line, ``./manage.py celeryd --log-level=DEBUG -c 10``
    proc = sqlite_site.proc("manage.py", "celeryd", "--log-level=DEBUG", "-c", "10",
                            "-P", "threads", name="celeryd")
    proc.wait_for("ready.")
    try:
        _, runs = sqlite_site.result(CREATE_AND_SEND)
    finally:
        proc.stop()
    assert runs == 1


def test_manage_py_celeriac_passes_other_commands(sqlite_site: Site) -> None:
    done = sqlite_site.manage("celeriac", "call", "shop.tasks.email_send", "--args", "[1]")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip()) == 36  # the task id
    assert sqlite_site.manage("celeriac", "--help").stdout.count("worker") >= 1
