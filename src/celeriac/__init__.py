"""celeriac: a Celery-compatible task queue (public API re-exported here)."""

__version__ = "0.1.0"
