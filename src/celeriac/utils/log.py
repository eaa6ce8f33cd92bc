"""Task loggers (``get_task_logger(__name__)`` adds the task name and id to records), and
how values are shown in log lines: cut to the task's ``resultrepr_maxsize``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..app.state import get_current_task
from ..messages import saferepr


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


def _limit(task: Any) -> int:
    return int(getattr(task, "resultrepr_maxsize", None) or 1024)


def bounded(value: Any, task: Any, show: Callable[[Any], str] = repr) -> str:
    """``value`` as shown in a log line: cut to the task's ``resultrepr_maxsize``
    (Celery's option, default 1024 characters)."""
    return saferepr(value, _limit(task), show)


def bounded_lines(text: str, task: Any) -> str:
    """A traceback for a log line: each line cut to ``resultrepr_maxsize`` (the exception
    message on its last line may be as long as the arguments it quotes)."""
    limit = _limit(task)
    return "\n".join(line if len(line) <= limit else line[:limit - 3] + "..."
                     for line in text.splitlines())
