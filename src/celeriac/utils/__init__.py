"""Helpers users import from Celery's ``celery.utils`` paths."""
