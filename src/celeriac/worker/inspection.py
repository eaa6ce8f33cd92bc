"""The remote-control commands a worker answers, with Celery's replies.

Each handler is called by :class:`~celeriac.worker.remote.RemoteControl` with
the request's ``arguments`` and returns the reply payload (Celery's shapes,
see tests/fixtures/pidbox-redis.json). What a handler needs from the worker
is a :class:`NodeView` (the in-process worker and the prefork supervisor
each provide one). ``scheduled`` lists the **broker's delayed messages** of
the node's queues (celeriac keeps countdown/ETA tasks in the broker, not in
a worker's memory). ``memsample``/``memdump``/``objgraph`` are in :mod:`.memory`;
``election`` is refused with a reply saying why (celeriac workers have no gossip).
"""

from __future__ import annotations

import logging
import os
import resource
import signal as signal_module
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from .. import states
from ..app import report as report_module
from ..app.control import signal_number
from ..brokers.base import redact
from ..events.event import clock
from ..exceptions import TaskRevokedError
from ..messages import Message, decode_body
from ..results.meta import store_result
from ..serialization import accepted_types
from .memory import HANDLERS as MEMORY_HANDLERS

if TYPE_CHECKING:
    from ..app.base import Celery
    from .remote import RemoteControl

logger = logging.getLogger("celeriac.worker.remote")
_STARTED = time.time()


class NodeView(Protocol):
    """What remote control reads and changes in a worker node."""

    hostname: str
    app: Celery

    def active(self) -> list[dict[str, Any]]: ...

    def reserved(self) -> list[dict[str, Any]]: ...

    def active_count(self) -> int: ...

    def processed(self) -> int: ...

    def processed_by_name(self) -> dict[str, int]: ...

    def queues(self) -> list[str]: ...

    def add_queue(self, queue: str) -> bool: ...

    def cancel_queue(self, queue: str) -> bool: ...

    def revoke(self, ids: list[str], terminate: bool, signal: Any) -> None: ...

    def revoked_ids(self) -> list[str]: ...

    def pool_stats(self) -> dict[str, Any]: ...

    def prefetch_stats(self) -> dict[str, Any]: ...

    def grow(self, n: int) -> str: ...

    def shrink(self, n: int) -> str: ...

    def autoscale(self, high: int, low: int) -> str: ...

    def restart_pool(self) -> str: ...

    def set_task_events(self, enabled: bool) -> None: ...

    def shutdown(self) -> None: ...


def message_info(message: Message, queue: str, hostname: str, *, time_start: float | None,
                 acknowledged: bool, worker_pid: int | None, redelivered: bool = False,
                 arguments: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """Celery's ``Request.info()`` for a message (``arguments``: its args and kwargs when
    already decoded, else read from the body)."""
    headers = message.headers if isinstance(message.headers, dict) else {}
    if arguments is not None:
        args, kwargs = arguments
    else:
        try:
            body = decode_body(message, accepted_types(["json"]))
            args, kwargs = (body[0], body[1]) if isinstance(body, list) and len(body) >= 2 \
                else ([], {})
        except Exception:
            args, kwargs = headers.get("argsrepr") or [], headers.get("kwargsrepr") or {}
    name = headers.get("task")
    return {"id": headers.get("id"), "name": name, "args": args, "kwargs": kwargs,
            "type": name, "hostname": hostname, "time_start": time_start,
            "acknowledged": acknowledged,
            "delivery_info": {"exchange": "", "routing_key": queue,
                              "priority": message.priority, "redelivered": redelivered},
            "worker_pid": worker_pid}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


def scheduled(rc: RemoteControl, **_: Any) -> list[dict[str, Any]]:
    node = rc.node
    out = []
    for queue in node.queues():
        for due, message in node.app.broker.delayed(queue):
            out.append({"eta": _iso(due), "priority": message.priority,
                        "request": message_info(message, queue, node.hostname, time_start=None,
                                                acknowledged=False, worker_pid=None)})
    return out


def query_task(rc: RemoteControl, ids: Any = None, **_: Any) -> dict[str, Any]:
    wanted = {ids} if isinstance(ids, str) else set(ids or ())
    out: dict[str, Any] = {}
    for state, items in (("active", rc.node.active()), ("reserved", rc.node.reserved()),
                         ("scheduled", [s["request"] for s in scheduled(rc)])):
        for info in items:
            if info["id"] in wanted and info["id"] not in out:
                out[info["id"]] = [state, info]
    return out


def registered(rc: RemoteControl, taskinfoitems: Any = None, **_: Any) -> list[str]:
    out = []
    for name in sorted(rc.node.app.tasks):
        if name.startswith("celery."):
            continue
        task = rc.node.app.tasks[name]
        extra = [f"{item}={getattr(task, item, None)}" for item in (taskinfoitems or ())
                 if getattr(task, item, None) is not None]
        out.append(f"{name} [{' '.join(extra)}]" if extra else name)
    return out


def stats(rc: RemoteControl, **_: Any) -> dict[str, Any]:
    node = rc.node
    usage = resource.getrusage(resource.RUSAGE_SELF)
    broker = node.app.broker
    return {
        "total": node.processed_by_name(), "pid": os.getpid(), "clock": str(clock.value),
        "uptime": int(time.time() - _STARTED), "pool": node.pool_stats(),
        "broker": {"transport": broker.url.split("://", 1)[0], "url": redact(broker.url)},
        "prefetch_count": int(node.app.conf.worker_prefetch_multiplier or 0),
        "prefetch": node.prefetch_stats(),
        "rusage": {name[3:]: getattr(usage, name) for name in dir(usage)
                   if name.startswith("ru_")},
    }


def conf(rc: RemoteControl, with_defaults: bool = False, **_: Any) -> dict[str, Any]:
    return report_module.settings(rc.node.app, with_defaults)


def report(rc: RemoteControl, **_: Any) -> dict[str, str]:
    return {"ok": "\n" + report_module.bugreport(rc.node.app)}


def revoke(rc: RemoteControl, task_id: Any = None, terminate: bool = False,
           signal: Any = None, **_: Any) -> dict[str, str]:
    ids = [task_id] if isinstance(task_id, str) else [str(t) for t in task_id or ()]
    _store_revoked(rc.node.app, ids, bool(terminate), signal)
    rc.node.revoke(ids, bool(terminate), signal)
    if terminate:
        return {"ok": f"terminate: {', '.join(ids)}"}
    return {"ok": f"tasks {set(ids)} flagged as revoked"}


def _store_revoked(app: Celery, ids: list[str], terminate: bool, signal: Any) -> None:
    """Record REVOKED (a request from Celery's tools or another client did not), so
    every process of this node, and nodes that start later, see it."""
    if app.backend is None:
        return
    extra = {"terminate": signal_module.Signals(signal_number(signal)).name} \
        if terminate else None
    for task_id in ids:
        try:
            meta = app.backend.get(task_id)
            if meta is None or meta.get("status") != states.REVOKED:
                store_result(app, task_id, TaskRevokedError("revoked"), states.REVOKED,
                             extra=extra)
        except Exception as exc:
            logger.warning("Could not record the revocation of %s: %s", task_id, exc)


def terminate(rc: RemoteControl, signal: Any = None, task_id: Any = None,
              **_: Any) -> dict[str, str]:
    return revoke(rc, task_id=task_id, terminate=True, signal=signal)


def _task(rc: RemoteControl, task_name: str) -> Any:
    task = rc.node.app.tasks.get(task_name)
    if task is None:
        raise KeyError(f"unknown task {task_name!r}")
    return task


def rate_limit(rc: RemoteControl, task_name: str = "", rate_limit: Any = None,
               **_: Any) -> dict[str, str]:
    try:
        _task(rc, task_name).rate_limit = rate_limit
    except KeyError as exc:
        return {"error": str(exc.args[0])}
    return {"ok": "new rate limit set successfully"}


def time_limit(rc: RemoteControl, task_name: str = "", soft: Any = None, hard: Any = None,
               **_: Any) -> dict[str, str]:
    try:
        task = _task(rc, task_name)
    except KeyError as exc:
        return {"error": str(exc.args[0])}
    task.soft_time_limit, task.time_limit = soft, hard
    return {"ok": "time limits set successfully"}


def add_consumer(rc: RemoteControl, queue: str = "", **_: Any) -> dict[str, str]:
    if not rc.node.add_queue(queue):
        return {"ok": f"already consuming from {queue!r}"}
    return {"ok": f"add consumer {queue}"}


def cancel_consumer(rc: RemoteControl, queue: str = "", **_: Any) -> dict[str, str]:
    rc.node.cancel_queue(queue)
    return {"ok": f"no longer consuming from {queue}"}


def active_queues(rc: RemoteControl, **_: Any) -> list[dict[str, Any]]:
    return [{"name": q, "exchange": {"name": q, "type": "direct", "arguments": None,
                                     "durable": True, "passive": False, "auto_delete": False,
                                     "delivery_mode": None, "no_declare": False},
             "routing_key": q, "queue_arguments": None, "binding_arguments": None,
             "consumer_arguments": None, "durable": True, "exclusive": False,
             "auto_delete": False, "no_ack": False, "alias": None, "bindings": [],
             "no_declare": None, "expires": None, "message_ttl": None, "max_length": None,
             "max_length_bytes": None, "max_priority": None} for q in rc.node.queues()]


def _events(enabled: bool) -> Callable[..., dict[str, str]]:
    def handler(rc: RemoteControl, **_: Any) -> dict[str, str]:
        rc.node.set_task_events(enabled)
        return {"ok": f"task events {'enabled' if enabled else 'disabled'}"}
    return handler


def heartbeat(rc: RemoteControl, **_: Any) -> None:
    rc.request_heartbeat()


def election(rc: RemoteControl, id: Any = None, topic: Any = None, **_: Any) -> dict[str, str]:
    """Refused: Celery holds elections over the worker-to-worker gossip of events, which
    celeriac workers do not take part in (see docs/monitoring.md)."""
    logger.warning("Refused control command election (id=%s, topic=%s): celeriac workers "
                   "take no part in Celery's gossip", id, topic)
    return {"error": ELECTION_REFUSED}


ELECTION_REFUSED = ("election is not supported: Celery elects a worker over the gossip of "
                    "worker-elect events between workers, which celeriac workers do not "
                    "take part in")


def hello(rc: RemoteControl, from_node: str = "", revoked: Any = None,
          **_: Any) -> dict[str, Any] | None:
    if from_node == rc.node.hostname:
        return None
    return {"revoked": {}, "clock": clock.forward()}


HANDLERS: dict[str, Callable[..., Any]] = {
    "ping": lambda rc, **_: {"ok": "pong"},
    "clock": lambda rc, **_: {"clock": clock.value},
    "active": lambda rc, **_: rc.node.active(),
    "reserved": lambda rc, **_: rc.node.reserved(),
    "revoked": lambda rc, **_: rc.node.revoked_ids(),
    "scheduled": scheduled, "query_task": query_task, "registered": registered,
    "stats": stats, "conf": conf, "report": report, "active_queues": active_queues,
    "revoke": revoke, "terminate": terminate, "rate_limit": rate_limit,
    "time_limit": time_limit, "add_consumer": add_consumer,
    "cancel_consumer": cancel_consumer, "enable_events": _events(True),
    "disable_events": _events(False), "heartbeat": heartbeat, "hello": hello,
    "pool_grow": lambda rc, n=1, **_: {"ok": rc.node.grow(int(n))},
    "pool_shrink": lambda rc, n=1, **_: {"ok": rc.node.shrink(int(n))},
    "autoscale": lambda rc, max=None, min=None, **_: {
        "ok": rc.node.autoscale(int(max), int(min if min is not None else 0))},
    "pool_restart": lambda rc, **_: {"ok": rc.node.restart_pool()},
    "shutdown": lambda rc, **_: {"ok": "shutdown"}, "election": election,
    **MEMORY_HANDLERS,
}
for _alias, _name in (("dump_active", "active"), ("dump_reserved", "reserved"),
                      ("dump_schedule", "scheduled"), ("dump_revoked", "revoked"),
                      ("dump_tasks", "registered"), ("dump_conf", "conf")):
    HANDLERS[_alias] = HANDLERS[_name]
