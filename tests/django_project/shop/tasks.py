"""Tasks of the test project: ORM access from sync and async tasks (HackSoft style)."""

import os
import time

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from celeriac import shared_task
from celeriac.contrib.soil import DownloadBase
from celeriac.contrib.soil.util import expose_cached_download

from .models import Email, Order, Tick


@shared_task
def process_order(order_id):
    """Mark an order processed; counts its runs (a second run would show)."""
    with transaction.atomic():
        order = Order.objects.select_for_update().get(id=order_id)
        order.status = "processed"
        order.processed_by = f"pid {os.getpid()}"
        order.runs = F("runs") + 1
        order.save()
    return Order.objects.get(id=order_id).runs


@shared_task
async def count_orders(status):
    """An async task reading the ORM through Django's async API."""
    return await Order.objects.filter(status=status).acount()


@shared_task
def email_send(email_id):
    email = Email.objects.get(id=email_id)
    email.status = "sent"
    email.sent_at = timezone.now()
    email.save()
    return email.to


@shared_task(bind=True)
def some_periodic_task(self):
    Tick.objects.create(task="some_periodic_task", task_id=self.request.id)
    return self.request.id


@shared_task(bind=True)
def other_periodic_task(self):
    Tick.objects.create(task="other_periodic_task", task_id=self.request.id)
    return self.request.id


def user_complete_onboarding(to):
    """The HackSoft seed's service: send the email once the transaction commits."""
    with transaction.atomic():
        email = Email.objects.create(to=to)
        transaction.on_commit(lambda: email_send.delay(email.id))
    return email


def _wait_for(folder, name, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(os.path.join(folder, name)):
        if time.monotonic() > deadline:
            raise TimeoutError(name)
        time.sleep(0.02)


@shared_task
def build_report(download_id, gate_dir):
    """Seed 000's soil example: progress 0 -> 50 -> 100, then the file exposed."""
    DownloadBase.set_progress(build_report, 0, 100)
    _wait_for(gate_dir, "go-50")
    DownloadBase.set_progress(build_report, 50, 100)
    _wait_for(gate_dir, "go-100")
    DownloadBase.set_progress(build_report, 100, 100)
    expose_cached_download("id,name\n1,ada\n", 600, ".csv", download_id=download_id)
