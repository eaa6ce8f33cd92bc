"""Seed 002 (the tutorial)'s ``myproject/celery.py``, with only the import changed.

The broker below is the seed's; the tests point the project at their own broker
with ``CELERIAC_BROKER_URL`` (which wins, as ``CELERY_BROKER_URL`` does in Celery).
"""

import os

from celeriac import Celery

os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'proj.settings')

app = Celery(
    main='proj',
    broker='redis://localhost:6379',
    backend='django-db')

app.conf.task_track_started = True
app.conf.task_send_sent_event = True

app.config_from_object('django.conf:settings', namespace='CELERY')
app.autodiscover_tasks()
