"""The pages beyond tasks: workers, queues, schedules, dead letters, audit, health.

Pausing a queue and resizing a pool use remote control (``app.control``
``cancel_consumer``/``add_consumer``, ``pool_grow``/``pool_shrink``); their
buttons show only when the app's control has them.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..cli.admin import describe
from . import views
from .actions import ActionError
from .history import TaskFilter
from .metrics import metrics_text
from .pages import back, dash, failed, render, result, user_name


def can_control(app: Any) -> bool:
    control = app.control
    return all(hasattr(control, m) for m in ("add_consumer", "cancel_consumer", "pool_grow",
                                             "pool_shrink"))


async def workers(request: Request) -> Response:
    d = dash(request)
    return render(request, "workers.html", active="/workers", title="Workers",
                  workers=views.workers(d.app, d.history, d.ingestor),
                  can_control=can_control(d.app))


async def worker_pool(request: Request) -> Response:
    d = dash(request)
    form = await request.form()
    change = str(form.get("change") or "")
    host = request.path_params["hostname"]
    if change not in ("grow", "shrink") or not can_control(d.app):
        return failed(request, ActionError(f"cannot {change} a pool here"))
    method = getattr(d.app.control, f"pool_{change}")
    replies = method(1, destination=[host], reply=True, timeout=2.0)
    d.history.audit(user_name(request), f"pool-{change}", f"worker {host}", str(replies))
    return result(request, f"Pool {change} sent to {host}: {replies}")


async def queues(request: Request) -> Response:
    d = dash(request)
    ws = views.workers(d.app, d.history, d.ingestor)
    return render(request, "queues.html", active="/queues", title="Queues",
                  queues=views.queues(d.app, d.history, d.config.queue_targets, ws),
                  can_control=can_control(d.app))


async def queue_confirm(request: Request) -> Response:
    d = dash(request)
    name = request.path_params["queue"]
    count = d.app.broker.stats(name).ready
    return render(request, "confirm.html", post_url=f"/queues/{name}/purge", count=count,
                  noun="waiting message", action_label="Purge", detail=f"queue {name}",
                  fields={})


async def queue_purge(request: Request) -> Response:
    d = dash(request)
    name = request.path_params["queue"]
    removed = d.actions.purge_queue(name, user_name(request))
    return back(request, f"Purged {removed} messages from {name}.", "/queues")


async def queue_consume(request: Request) -> Response:
    d = dash(request)
    form = await request.form()
    change = str(form.get("change") or "")
    name = request.path_params["queue"]
    if change not in ("pause", "resume") or not can_control(d.app):
        return failed(request, ActionError(f"cannot {change} consuming {name} here"))
    if change == "pause":
        replies = d.app.control.cancel_consumer(name, reply=True, timeout=2.0)
    else:
        replies = d.app.control.add_consumer(name, reply=True, timeout=2.0)
    d.history.audit(user_name(request), f"queue-{change}", f"queue {name}", str(replies))
    return result(request, f"{change.capitalize()} {name}: {replies}")


async def schedules(request: Request) -> Response:
    d = dash(request)
    try:
        items = views.schedules(d.app)
    except Exception as exc:  # a store that cannot be reached shows as a message
        return render(request, "schedules.html", active="/schedules", schedules=[],
                      message=f"The schedule store cannot be read: {exc}", message_kind="bad")
    return render(request, "schedules.html", active="/schedules", title="Schedules",
                  schedules=items)


async def schedule_change(request: Request) -> Response:
    d = dash(request)
    form = await request.form()
    name, change = request.path_params["name"], request.path_params["change"]
    fields = {k: form.get(k) for k in ("schedule", "args", "kwargs")} if change == "edit" \
        else None
    try:
        out = d.actions.schedule(name, change, user_name(request), fields)
    except ActionError as exc:
        return failed(request, exc)
    text = {"run": f"{name}: sent as task {out}", "enable": f"{name} enabled",
            "disable": f"{name} disabled", "edit": f"{name} saved"}.get(change, change)
    return back(request, text + ".", "/schedules")


def _dead_filter(params: Any) -> dict[str, str | None]:
    return {k: (str(params.get(k)).strip() or None) if params.get(k) else None
            for k in ("queue", "reason", "task")}


async def deadletters(request: Request) -> Response:
    d = dash(request)
    flt = _dead_filter(request.query_params)
    items = [describe(x, 80) for x in d.actions.dead_letters(**flt, limit=500)]
    return render(request, "deadletters.html", active="/deadletters", title="Dead letters",
                  items=items, queue=flt["queue"], reason=flt["reason"], task=flt["task"])


async def dead_confirm(request: Request) -> Response:
    d = dash(request)
    form = await request.form()
    flt = _dead_filter(form)
    action = str(form.get("action") or "")
    if action == "purge":
        if flt["reason"] or flt["task"]:
            return failed(request, ActionError("purge works per queue or for all queues"))
        count = sum(d.app.broker.stats(q).dead for q in (
            [flt["queue"]] if flt["queue"] else d.app.broker.queues()))
    else:
        count = len(d.actions.dead_letters(**flt, limit=100_000))
    fields = {k: v or "" for k, v in flt.items()}
    fields["action"] = action
    return render(request, "confirm.html", post_url=f"/deadletters/{action}", count=count,
                  noun="dead letter", action_label=action.capitalize(), fields=fields,
                  detail=f"queue {flt['queue']}" if flt["queue"] else None)


async def dead_retry(request: Request) -> Response:
    d = dash(request)
    form = await request.form()
    flt = _dead_filter(form)
    try:
        done = d.actions.retry_dead(user_name(request), str(form.get("id") or "") or None,
                                    **flt)
    except ActionError as exc:
        return failed(request, exc)
    return back(request, f"Retried {done} dead letter{'s' if done != 1 else ''}.",
                "/deadletters")


async def dead_purge(request: Request) -> Response:
    d = dash(request)
    form = await request.form()
    removed = d.actions.purge_dead(user_name(request), str(form.get("queue") or "") or None)
    return back(request, f"Purged {removed} dead letters.", "/deadletters")


async def audit(request: Request) -> Response:
    d = dash(request)
    before = request.query_params.get("before")
    entries = d.history.audit_log(101, int(before) if before and before.isdigit() else None)
    return render(request, "audit.html", active="/audit", title="Audit log",
                  entries=entries[:100], more=len(entries) > 100)


async def healthz(request: Request) -> Response:
    d = dash(request)
    started = time.perf_counter()
    try:
        d.history.count(TaskFilter(), cap=1)
    except Exception as exc:
        return JSONResponse({"status": "error", "history": str(exc)}, status_code=503)
    return JSONResponse({"status": "ok", "history_ms": round(
        (time.perf_counter() - started) * 1000, 2), "events_written": d.ingestor.written,
        "events_dropped": d.ingestor.dropped})


async def metrics(request: Request) -> Response:
    d = dash(request)
    return PlainTextResponse(metrics_text(d), media_type="text/plain; version=0.0.4")


def routes() -> list[Route]:
    return [
        Route("/workers", workers),
        Route("/workers/{hostname}/pool", worker_pool, methods=["POST"]),
        Route("/queues", queues),
        Route("/queues/{queue}/confirm", queue_confirm, methods=["POST"]),
        Route("/queues/{queue}/purge", queue_purge, methods=["POST"]),
        Route("/queues/{queue}/consume", queue_consume, methods=["POST"]),
        Route("/schedules", schedules),
        Route("/schedules/{name}/{change}", schedule_change, methods=["POST"]),
        Route("/deadletters", deadletters),
        Route("/deadletters/confirm", dead_confirm, methods=["POST"]),
        Route("/deadletters/retry", dead_retry, methods=["POST"]),
        Route("/deadletters/purge", dead_purge, methods=["POST"]),
        Route("/audit", audit),
        Route("/healthz", healthz),
        Route("/metrics", metrics),
    ]
