"""Seed 004 (HackSoft)'s ``setup_periodic_tasks`` command; only the import is changed
(``django_celery_beat.models`` -> ``celeriac.contrib.django.beat.models``), plus the
missing comma of the seed's dict literal and a second every-second task the beat
tests count."""

from django.core.management.base import BaseCommand
from django.db import transaction

from celeriac.contrib.django.beat.models import IntervalSchedule, CrontabSchedule, PeriodicTask

from shop.tasks import some_periodic_task, other_periodic_task


class Command(BaseCommand):
    help = f"""
    Setup celery beat periodic tasks.

    Following tasks will be created:

    - {some_periodic_task.name}
    """

    @transaction.atomic
    def handle(self, *args, **kwargs):
        print('Deleting all periodic tasks and schedules...\n')

        IntervalSchedule.objects.all().delete()
        CrontabSchedule.objects.all().delete()
        PeriodicTask.objects.all().delete()

        periodic_tasks_data = [
            {
                'task': some_periodic_task,
                'name': 'Do some peridoic stuff',
                # https://crontab.guru/#15_*_*_*_*
                'cron': {
                    'minute': '*',
                    'hour': '*',
                    'day_of_week': '*',
                    'day_of_month': '*',
                    'month_of_year': '*',
                },
                'enabled': True
            },
        ]

        for periodic_task in periodic_tasks_data:
            print(f'Setting up {periodic_task["task"].name}')

            cron = CrontabSchedule.objects.create(
                **periodic_task['cron']
            )

            PeriodicTask.objects.create(
                name=periodic_task['name'],
                task=periodic_task['task'].name,
                crontab=cron,
                enabled=periodic_task['enabled']
            )

        every_second = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS)
        PeriodicTask.objects.create(name='every second', task=other_periodic_task.name,
                                    interval=every_second, enabled=True)
