"""What events tell about a cluster: :class:`State` (``app.events.State``), as Celery's.

``state.event(event)`` folds one event into :attr:`State.workers` (hostname
-> :class:`Worker`) and :attr:`State.tasks` (uuid -> :class:`Task`), keeping
at most ``max_tasks_in_memory`` tasks (oldest forgotten first). A worker is
``alive`` while its last heartbeat is younger than ``freq * expire_window``
(Celery: 2 s heartbeats, 3.5 windows). Task states follow the events
(``task-received`` -> RECEIVED, ``task-started`` -> STARTED, ...); an event
that arrives late (a ``task-received`` after ``task-succeeded``) does not
move a task back.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from typing import Any

from .. import states

HEARTBEAT_EXPIRE_WINDOW = 200.0 / 60.0  # Celery's: heartbeat freq * 3.33

TASK_STATES = {
    "task-sent": states.PENDING, "task-received": states.RECEIVED,
    "task-started": states.STARTED, "task-succeeded": states.SUCCESS,
    "task-failed": states.FAILURE, "task-retried": states.RETRY,
    "task-revoked": states.REVOKED, "task-rejected": states.REJECTED,
}
#: order of states: a late event never moves a task back
_RANK = {states.PENDING: 0, states.RECEIVED: 1, states.STARTED: 2, states.RETRY: 3,
         states.SUCCESS: 4, states.FAILURE: 4, states.REVOKED: 4, states.REJECTED: 4}
_TIME_FIELD = {"task-sent": "sent", "task-received": "received", "task-started": "started",
               "task-succeeded": "succeeded", "task-failed": "failed",
               "task-retried": "retried", "task-revoked": "revoked",
               "task-rejected": "rejected"}


class Worker:
    """One worker node as its events describe it."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.pid: int | None = None
        self.freq = 2.0
        self.heartbeats: collections.deque[float] = collections.deque(maxlen=4)
        self.active = 0
        self.processed = 0
        self.loadavg: list[float] | None = None
        self.sw_ident = self.sw_ver = self.sw_sys = None
        self.offline = False
        self.clock = 0

    def update(self, event: dict[str, Any]) -> None:
        for name in ("pid", "freq", "active", "processed", "loadavg", "sw_ident", "sw_ver",
                     "sw_sys", "clock"):
            if name in event:
                setattr(self, name, event[name])
        kind = event.get("type")
        if kind == "worker-offline":
            self.offline = True
            self.heartbeats.clear()
        elif kind in ("worker-online", "worker-heartbeat"):
            self.offline = False
            self.heartbeats.append(float(event.get("local_received")
                                         or event.get("timestamp") or time.time()))

    @property
    def heartbeat_expires(self) -> float:
        if not self.heartbeats:
            return 0.0
        return self.heartbeats[-1] + float(self.freq or 2.0) * HEARTBEAT_EXPIRE_WINDOW

    @property
    def alive(self) -> bool:
        return bool(self.heartbeats) and time.time() < self.heartbeat_expires

    @property
    def status_string(self) -> str:
        return "ONLINE" if self.alive else "OFFLINE"

    def as_dict(self) -> dict[str, Any]:
        return {"hostname": self.hostname, "pid": self.pid, "freq": self.freq,
                "active": self.active, "processed": self.processed,
                "loadavg": self.loadavg, "sw_ident": self.sw_ident, "sw_ver": self.sw_ver,
                "alive": self.alive,
                "last_heartbeat": self.heartbeats[-1] if self.heartbeats else None}

    def __repr__(self) -> str:
        return f"<Worker: {self.hostname} ({self.status_string})>"


class Task:
    """One task as its events describe it."""

    FIELDS = ("name", "args", "kwargs", "retries", "eta", "expires", "root_id",
              "parent_id", "result", "exception", "traceback", "runtime", "queue",
              "exchange", "routing_key")

    def __init__(self, uuid: str) -> None:
        self.uuid = uuid
        self.state = states.PENDING
        self.name: str | None = None
        self.worker: Worker | None = None
        self.timestamp: float | None = None
        self.sent = self.received = self.started = self.succeeded = None
        self.failed = self.retried = self.revoked = self.rejected = None
        self.args = self.kwargs = self.result = self.exception = self.traceback = None
        self.retries = 0
        self.eta = self.expires = self.root_id = self.parent_id = None
        self.runtime: float | None = None
        self.queue = self.exchange = self.routing_key = None

    def update(self, event: dict[str, Any], worker: Worker | None) -> None:
        kind = event["type"]
        when = event.get("timestamp")
        if kind in _TIME_FIELD:
            setattr(self, _TIME_FIELD[kind], when)
        for name in self.FIELDS:
            if name in event and event[name] is not None:
                setattr(self, name, event[name])
        if worker is not None and kind != "task-sent":
            self.worker = worker
        new = TASK_STATES.get(kind)
        if new is not None and (_RANK[new] >= _RANK.get(self.state, 0)
                                or self.state == states.RETRY):
            self.state = new
            self.timestamp = when

    @property
    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def as_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.FIELDS}
        out.update(uuid=self.uuid, state=self.state, timestamp=self.timestamp,
                   worker=self.worker.hostname if self.worker else None,
                   sent=self.sent, received=self.received, started=self.started,
                   succeeded=self.succeeded, failed=self.failed)
        return out

    def __repr__(self) -> str:
        return f"<Task: {self.name}({self.uuid}) {self.state}>"


class State:
    """The cluster as seen through events."""

    def __init__(self, callback: Any = None, max_workers_in_memory: int = 5000,
                 max_tasks_in_memory: int = 10000, **_: Any) -> None:
        self.callback = callback
        self.max_workers_in_memory = max_workers_in_memory
        self.max_tasks_in_memory = max_tasks_in_memory
        self.workers: dict[str, Worker] = {}
        self.tasks: collections.OrderedDict[str, Task] = collections.OrderedDict()
        self.event_count = 0
        self.task_count = 0
        self._mutex = threading.Lock()

    def get_or_create_worker(self, hostname: str) -> tuple[Worker, bool]:
        worker = self.workers.get(hostname)
        if worker is not None:
            return worker, False
        worker = self.workers[hostname] = Worker(hostname)
        return worker, True

    def get_or_create_task(self, uuid: str) -> tuple[Task, bool]:
        task = self.tasks.get(uuid)
        if task is not None:
            return task, False
        task = self.tasks[uuid] = Task(uuid)
        self.task_count += 1
        while len(self.tasks) > self.max_tasks_in_memory:
            self.tasks.popitem(last=False)
        return task, True

    def event(self, event: dict[str, Any]) -> tuple[Any, bool]:
        """Fold one event in; returns ``(worker or task, created)``."""
        with self._mutex:
            result = self._event(event)
        if self.callback is not None:
            self.callback(self, event)
        return result

    def _event(self, event: dict[str, Any]) -> tuple[Any, bool]:
        self.event_count += 1
        kind = str(event.get("type", ""))
        hostname = str(event.get("hostname", ""))
        if kind.startswith("worker-"):
            worker, created = self.get_or_create_worker(hostname)
            worker.update(event)
            return worker, created
        if kind.startswith("task-") and event.get("uuid"):
            owner: Worker | None = None
            if kind != "task-sent" and hostname:
                owner, _ = self.get_or_create_worker(hostname)
            task, created = self.get_or_create_task(str(event["uuid"]))
            task.update(event, owner)
            return task, created
        return None, False

    def freeze_while(self, fun: Any, *args: Any, clear_after: bool = False,
                     **kwargs: Any) -> Any:
        with self._mutex:
            try:
                return fun(*args, **kwargs)
            finally:
                if clear_after:
                    self._clear()

    def _clear(self) -> None:
        self.tasks.clear()
        self.event_count = 0
        self.task_count = 0

    def clear(self, ready: bool = True) -> None:
        with self._mutex:
            if ready:
                for uuid in [u for u, t in self.tasks.items() if t.ready]:
                    del self.tasks[uuid]
            else:
                self._clear()

    def alive_workers(self) -> list[Worker]:
        return [w for w in self.workers.values() if w.alive]

    def itertasks(self, limit: int | None = None) -> Iterator[tuple[str, Task]]:
        for index, item in enumerate(self.tasks.items()):
            if limit is not None and index >= limit:
                return
            yield item

    def tasks_by_time(self, limit: int | None = None) -> list[tuple[str, Task]]:
        ordered = sorted(self.tasks.items(), key=lambda kv: kv[1].timestamp or 0.0,
                         reverse=True)
        return ordered[:limit] if limit is not None else ordered

    def tasks_by_type(self, name: str, limit: int | None = None) -> list[tuple[str, Task]]:
        return [(u, t) for u, t in self.tasks_by_time(limit) if t.name == name]

    def task_types(self) -> list[str]:
        return sorted({t.name for t in self.tasks.values() if t.name})

    def __repr__(self) -> str:
        return f"<State: events={self.event_count} tasks={self.task_count}>"
