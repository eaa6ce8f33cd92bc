"""Django app ``celeriac.contrib.django.beat``: periodic tasks in the database.

django-celery-beat's models and semantics (:mod:`.models`), a schedule store on
those tables that keeps celeriac's fire-time claims (:mod:`.store`), the
``DatabaseScheduler`` (:mod:`.schedulers`) and an admin (:mod:`.admin`).
"""
