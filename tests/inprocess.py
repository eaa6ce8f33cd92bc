"""A worker in a thread of the test process, and a receiver of its events.

The monitoring, wire and ``rpc://`` tests talk to such a worker through
``app.control`` and watch its events with ``app.events.Receiver``, as a Python user
would; :func:`threaded_worker` starts both and stops them at the end.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celeriac import Celery
from celeriac.worker.main import Worker
from celeryproc import wait_until


@contextmanager
def threaded_worker(app: Celery, hostname: str, *, concurrency: int = 2,
                    events: bool = False, ready: float | None = 20.0
                    ) -> Iterator[tuple[Worker, list[dict[str, Any]]]]:
    """A threads-pool worker named ``hostname`` running in a thread, and (``events``) the
    list a receiver started first fills with every event. With ``ready`` (seconds) it
    waits until the worker answers ``ping``."""
    seen: list[dict[str, Any]] = []
    receiver = listening = None
    if events:
        receiver = app.events.Receiver(handlers={"*": seen.append})
        listening = threading.Thread(target=receiver.capture, kwargs={"wakeup": False},
                                     daemon=True)
        listening.start()
    worker = Worker(app, hostname=hostname, pool="threads", concurrency=concurrency,
                    setup_logs=False)
    thread = threading.Thread(target=worker.start, daemon=True)
    thread.start()
    try:
        if ready is not None:
            inspect = app.control.inspect(destination=[hostname], timeout=0.5)
            wait_until(lambda: inspect.ping(), ready, what=f"{hostname} to answer ping")
        yield worker, seen
    finally:
        if receiver is not None:
            receiver.should_stop = True
        worker.stop()
        thread.join(20)
        if listening is not None:
            listening.join(10)
