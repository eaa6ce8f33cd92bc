"""``django.tasks`` functions of the test project (Django 6, or the backport)."""

try:
    from django.tasks import task
except ImportError:  # Django < 6: the django-tasks backport
    from django_tasks import task

from .models import Order


@task()
def add_order(name):
    return Order.objects.create(name=name, status="from-django-task").id


@task(priority=50, queue_name="reports", takes_context=True)
def report(context, prefix):
    return {"prefix": prefix, "attempt": context.attempt,
            "orders": Order.objects.filter(name__startswith=prefix).count()}


@task()
def broken():
    raise ValueError("this django task fails")


@task()
async def async_count():
    return await Order.objects.acount()
