"""The JSON API (``/api/...``) and its OpenAPI 3.1 schema at ``/api/openapi.json``.

One table, :data:`ENDPOINTS`, declares each endpoint's method, path, summary,
query parameters and body; the routes and the schema are both built from it,
so the schema cannot drift from what is served. Programs authenticate with
HTTP Basic (``password`` mode) or the proxy header, and send JSON bodies
(``Content-Type: application/json``); errors are ``{"error": "..."}`` with
status 400, 401, 403, 404 or 409.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..cli.admin import describe
from ..version import __version__
from . import views
from .actions import ActionError
from .pages import cursor_of, dash, parse_cursor, parse_filter, user_name

Handler = Callable[[Request], Awaitable[Any]]
FILTER_PARAMS = ["state", "name", "queue", "worker", "since", "until", "text"]


@dataclass
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    query: list[str] = field(default_factory=list)
    body: dict[str, Any] | None = None
    admin: bool = False


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ActionError(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ActionError("the body must be a JSON object")
    return data


async def list_tasks(request: Request) -> Any:
    d = dash(request)
    flt = parse_filter(request.query_params)
    limit = min(500, max(1, int(request.query_params.get("limit") or d.config.page_size)))
    rows, more = d.history.page(flt, limit, parse_cursor(request.query_params.get("before")))
    return {"tasks": [r.as_dict() for r in rows],
            "next": cursor_of(rows[-1]) if more and rows else None}


async def send_task(request: Request) -> Any:
    d = dash(request)
    body = await _body(request)
    name, args, kwargs = body.get("name"), body.get("args"), body.get("kwargs")
    if not isinstance(name, str) or not name:
        raise ActionError("name (the task name) is required")
    if args is not None and not isinstance(args, list):
        raise ActionError("args must be a list")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ActionError("kwargs must be an object")
    countdown = body.get("countdown")
    if countdown is not None and (isinstance(countdown, bool) or not isinstance(
            countdown, (int, float))):
        raise ActionError("countdown must be a number of seconds")
    new_id = d.actions.send(name, user_name(request), args=args, kwargs=kwargs,
                            queue=body.get("queue"), countdown=countdown)
    return {"task_id": new_id}


async def count_tasks(request: Request) -> Any:
    d = dash(request)
    return {"count": d.actions.bulk_count(parse_filter(request.query_params))}


async def get_task(request: Request) -> Any:
    d = dash(request)
    tid = request.path_params["task_id"]
    record = d.history.get(tid)
    if record is None:
        raise ActionError(f"no task {tid} in the history", 404)
    out = record.as_dict()
    out["time_to_start"] = record.time_to_start
    out["attempts"] = [a.as_dict() for a in d.history.attempts(tid)]
    out["children"] = [c.task_id for c in d.history.children(tid)]
    out["retried_as"] = d.history.retries_of(tid)
    return out


async def retry_task(request: Request) -> Any:
    d = dash(request)
    body = await _body(request)
    args, kwargs = body.get("args"), body.get("kwargs")
    if args is not None and not isinstance(args, list):
        raise ActionError("args must be a list")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ActionError("kwargs must be an object")
    new_id = d.actions.retry(request.path_params["task_id"], user_name(request), args=args,
                             kwargs=kwargs, queue=body.get("queue"))
    return {"task_id": new_id, "retried_from": request.path_params["task_id"]}


async def revoke_task(request: Request) -> Any:
    d = dash(request)
    body = await _body(request)
    d.actions.revoke([request.path_params["task_id"]], user_name(request),
                     terminate=bool(body.get("terminate")), signal=body.get("signal"))
    return {"revoked": request.path_params["task_id"], "terminate": bool(body.get("terminate"))}


async def bulk_tasks(request: Request) -> Any:
    d = dash(request)
    body = await _body(request)
    flt = parse_filter(body.get("filter") or {})
    confirm = body.get("confirm")
    if not isinstance(confirm, int):
        raise ActionError("confirm must be the count from GET /api/tasks/count")
    return d.actions.bulk(str(body.get("action")), flt, confirm, user_name(request))


async def list_workers(request: Request) -> Any:
    d = dash(request)
    return {"workers": views.workers(d.app, d.history, d.ingestor)}


async def list_queues(request: Request) -> Any:
    d = dash(request)
    ws = views.workers(d.app, d.history, d.ingestor)
    return {"queues": views.queues(d.app, d.history, d.config.queue_targets, ws)}


async def purge_queue(request: Request) -> Any:
    d = dash(request)
    return {"removed": d.actions.purge_queue(request.path_params["queue"], user_name(request))}


async def list_schedules(request: Request) -> Any:
    return {"schedules": views.schedules(dash(request).app)}


async def change_schedule(request: Request) -> Any:
    d = dash(request)
    body = await _body(request)
    action = str(body.get("action") or "")
    fields = {k: (json.dumps(body[k]) if k in ("args", "kwargs") and not isinstance(
        body[k], str) else body[k]) for k in ("schedule", "args", "kwargs") if k in body}
    out = d.actions.schedule(request.path_params["name"], action, user_name(request), fields)
    return {"name": request.path_params["name"], "action": action,
            "task_id": out if action == "run" else None}


async def list_dead(request: Request) -> Any:
    d = dash(request)
    q = request.query_params
    items = d.actions.dead_letters(q.get("queue"), q.get("reason"), q.get("task"),
                                   limit=min(10_000, int(q.get("limit") or 500)))
    return {"dead_letters": [describe(x, 10_000) for x in items]}


async def retry_dead(request: Request) -> Any:
    d = dash(request)
    body = await _body(request)
    done = d.actions.retry_dead(user_name(request), body.get("id"), queue=body.get("queue"),
                                reason=body.get("reason"), task=body.get("task"))
    return {"retried": done}


async def purge_dead(request: Request) -> Any:
    d = dash(request)
    body = await _body(request)
    return {"removed": d.actions.purge_dead(user_name(request), body.get("queue"))}


async def audit_log(request: Request) -> Any:
    d = dash(request)
    before = request.query_params.get("before")
    entries = d.history.audit_log(int(request.query_params.get("limit") or 100),
                                  int(before) if before and before.isdigit() else None)
    return {"entries": [e.as_dict() for e in entries]}


async def overview(request: Request) -> Any:
    d = dash(request)
    return views.overview(d.app, d.history, d.ingestor, d.config.queue_targets)


_STR = {"type": "string"}
ENDPOINTS = [
    Endpoint("GET", "/api/overview", overview, "Throughput, failure rate, workers, backlog"),
    Endpoint("GET", "/api/tasks", list_tasks, "Task history, newest first (keyset pages)",
             [*FILTER_PARAMS, "before", "limit"]),
    Endpoint("POST", "/api/tasks", send_task, "Send a task by name (recorded in the history)",
             body={"name": _STR, "args": {"type": "array"}, "kwargs": {"type": "object"},
                   "queue": _STR, "countdown": {"type": "number"}}, admin=True),
    Endpoint("GET", "/api/tasks/count", count_tasks, "How many tasks match a filter",
             FILTER_PARAMS),
    Endpoint("POST", "/api/tasks/bulk", bulk_tasks,
             "Retry, revoke, terminate or purge (forget) every task matching a filter",
             body={"action": {"enum": ["retry", "revoke", "terminate", "purge"]},
                   "filter": {"type": "object"}, "confirm": {"type": "integer"}}, admin=True),
    Endpoint("GET", "/api/tasks/{task_id}", get_task, "One task with attempts and children"),
    Endpoint("POST", "/api/tasks/{task_id}/retry", retry_task,
             "Send the task again, optionally with edited arguments",
             body={"args": {"type": "array"}, "kwargs": {"type": "object"}, "queue": _STR},
             admin=True),
    Endpoint("POST", "/api/tasks/{task_id}/revoke", revoke_task, "Revoke (and terminate)",
             body={"terminate": {"type": "boolean"}, "signal": _STR}, admin=True),
    Endpoint("GET", "/api/workers", list_workers, "Workers: pool, load, heartbeat, queues"),
    Endpoint("GET", "/api/queues", list_queues,
             "Queues: depth, oldest message, time to start against target, consumers"),
    Endpoint("POST", "/api/queues/{queue}/purge", purge_queue, "Delete waiting messages",
             admin=True),
    Endpoint("GET", "/api/schedules", list_schedules, "Periodic tasks"),
    Endpoint("POST", "/api/schedules/{name}", change_schedule,
             "Enable, disable, run now or edit a periodic task",
             body={"action": {"enum": ["enable", "disable", "run", "edit"]}, "schedule": _STR,
                   "args": {"type": "array"}, "kwargs": {"type": "object"}}, admin=True),
    Endpoint("GET", "/api/deadletters", list_dead, "Dead letters",
             ["queue", "reason", "task", "limit"]),
    Endpoint("POST", "/api/deadletters/retry", retry_dead,
             "Retry one dead letter (id) or all matching queue/reason/task",
             body={"id": _STR, "queue": _STR, "reason": _STR, "task": _STR}, admin=True),
    Endpoint("POST", "/api/deadletters/purge", purge_dead,
             "Delete the dead letters of a queue (or all)", body={"queue": _STR}, admin=True),
    Endpoint("GET", "/api/audit", audit_log, "The audit log, newest first",
             ["before", "limit"]),
]


def _wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return JSONResponse(await handler(request))
        except ActionError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    return endpoint


def openapi() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    error = {"description": "error", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": _STR}}}}}
    for e in ENDPOINTS:
        op: dict[str, Any] = {
            "summary": e.summary, "operationId": e.handler.__name__,
            "parameters": [{"name": p, "in": "query", "required": False, "schema": _STR}
                           for p in e.query] + [
                {"name": n, "in": "path", "required": True, "schema": _STR}
                for n in [s[1:-1] for s in e.path.split("/") if s.startswith("{")]],
            "responses": {"200": {"description": "OK", "content": {"application/json": {
                "schema": {"type": "object"}}}}, "400": error, "401": error, "403": error,
                "404": error, "409": error},
            "security": [{"basic": []}, {"session": []}],
        }
        if e.body is not None:
            op["requestBody"] = {"required": False, "content": {"application/json": {
                "schema": {"type": "object", "properties": e.body}}}}
        if e.admin:
            op["description"] = "Needs the admin role."
        paths.setdefault(e.path, {})[e.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "celeriac dashboard API", "version": __version__},
        "paths": paths,
        "components": {"securitySchemes": {
            "basic": {"type": "http", "scheme": "basic"},
            "session": {"type": "apiKey", "in": "cookie", "name": "celeriac_dashboard"}}},
    }


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi())


def routes() -> list[Route]:
    out = [Route("/api/openapi.json", openapi_json)]
    out += [Route(e.path, _wrap(e.handler), methods=[e.method]) for e in ENDPOINTS]
    return out
