"""``manage.py celeriac``, ``celeriac_import`` and ``celeryd`` (an alias of ``celeriac``)."""
