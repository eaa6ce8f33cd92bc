"""The test project's package (the tutorial seed's layout)."""

from .celery import app as celery_app

__all__ = ["celery_app"]
