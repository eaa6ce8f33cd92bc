"""Django app ``celeriac.contrib.django.results``: task and group results in the database.

django-celery-results' models and field names (``TaskResult``, ``GroupResult``,
``ChordCounter``), its backend names (``result_backend = 'django-db'`` and
``'django-cache'``, see :mod:`.store`), an admin with retry and revoke actions,
and daily expiry (:mod:`.cleanup`).
"""
