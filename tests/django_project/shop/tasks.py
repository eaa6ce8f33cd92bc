"""Tasks of the test project: ORM access from sync and async tasks (HackSoft style)."""

import os

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from celeriac import shared_task

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
