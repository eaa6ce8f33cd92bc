"""Django management commands of celeriac (``manage.py celeriac``, ``celeriac_import``)."""
