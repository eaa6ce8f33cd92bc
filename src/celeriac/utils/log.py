"""Task loggers: ``get_task_logger(__name__)`` adds the task name and id to records."""

from __future__ import annotations

import logging
from typing import Any

from ..app.state import get_current_task


class TaskContextFilter(logging.Filter):
    """Adds ``task_name`` and ``task_id`` to every record (``???`` outside a task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        task = get_current_task()
        if task is not None and task.request.id:
            record.task_name = task.name
            record.task_id = task.request.id
        else:
            record.task_name = getattr(record, "task_name", "???")
            record.task_id = getattr(record, "task_id", "???")
        return True


_filter = TaskContextFilter()


def get_task_logger(name: str) -> logging.Logger:
    """A logger under ``celery.task`` semantics that knows the running task."""
    logger = logging.getLogger(name)
    if _filter not in logger.filters:
        logger.addFilter(_filter)
    return logger


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def task_log_format(fmt: str) -> Any:
    return logging.Formatter(fmt)
