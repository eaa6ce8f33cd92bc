"""Database migrations of ``celeriac_beat`` (django-celery-beat's tables and the claim tables)."""
