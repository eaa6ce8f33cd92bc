"""The dashboard's persistent task history (see :mod:`.store`)."""

from __future__ import annotations

from .engines import DEFAULT_URL, open_database
from .records import Attempt, AuditEntry, TaskFilter, TaskRecord
from .store import HistoryStore

__all__ = ["DEFAULT_URL", "Attempt", "AuditEntry", "HistoryStore", "TaskFilter", "TaskRecord",
           "open_database"]
