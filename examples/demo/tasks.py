"""Demo tasks for ``run_demo.py``: the embedded SQLite broker, no server needed.

The app configures no broker, so celeriac uses its embedded SQLite broker and
result store: one file, ``$CELERIAC_SQLITE_PATH`` or ``./celeriac.sqlite3``.
Code written for Celery runs unchanged apart from the import.
"""

from __future__ import annotations

import time

from celeriac import Celery

app = Celery("tasks")


@app.task
def add(x: int, y: int) -> int:
    """The classic."""
    return x + y


@app.task(bind=True, max_retries=3, default_retry_delay=0.5)
def flaky(self, service: str) -> str:
    """Fails on the first attempt, succeeds on the retry (same task id, retries + 1)."""
    if self.request.retries == 0:
        raise self.retry(exc=ConnectionError(f"{service} is unavailable"), countdown=0.5)
    return f"{service} answered after {self.request.retries} retry"


@app.task(bind=True)
def build_report(self, sections: int) -> str:
    """A slow task that reports its progress with ``update_state``."""
    for done in range(1, sections + 1):
        time.sleep(0.4)
        self.update_state(state="PROGRESS", meta={"done": done, "total": sections})
    return f"report with {sections} sections"


@app.task
def remind(message: str) -> dict[str, object]:
    """Sent with a countdown: it waits in the broker, not in the worker's memory."""
    return {"message": message, "ran_at": time.time()}
