"""Database migrations of ``celeriac_results`` (django-celery-results' tables)."""
