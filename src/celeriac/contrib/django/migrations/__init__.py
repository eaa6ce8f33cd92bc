"""Database migrations of the Django app ``celeriac`` (the outbox table)."""
