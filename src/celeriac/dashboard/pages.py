"""The HTML pages and the buttons on them (server-rendered Jinja2, htmx for actions).

Each page reads through :mod:`.views` or the history store; each button
posts to a route here that calls :class:`~.actions.Actions` and answers with
a small fragment (htmx swaps it into ``#result``) or, when the page itself
changed (a schedule enabled), with ``HX-Redirect`` back to it and the outcome
as a flash message. Bulk actions show a confirmation with the count first.
"""

from __future__ import annotations

import html
import json
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from . import views
from .actions import ActionError, parse_json_arg
from .auth import new_csrf_token
from .history import TaskFilter, TaskRecord

ALL_STATES = ["SENT", "RECEIVED", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED",
              "REJECTED"]


def _when(ts: float | None) -> str:
    if not ts:
        return ""
    return datetime.fromtimestamp(float(ts), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    value = float(value)
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _ago(value: float | None) -> str:
    return "" if value is None else f"{_seconds(value)} ago"


_env = Environment(loader=PackageLoader("celeriac.dashboard", "templates"),
                   autoescape=select_autoescape(["html"]))
_env.filters.update(when=_when, seconds=_seconds, ago=_ago)
templates = Jinja2Templates(env=_env)


def dash(request: Request) -> Any:
    return request.app.state.dashboard


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    d = dash(request)
    flash = request.session.pop("flash", None) if "session" in request.scope else None
    base = {"user": request.scope.get("state", {}).get("user"),
            "csrf": request.session.get("csrf", "") if "session" in request.scope else "",
            "auth_mode": d.config.auth.mode, "auth_header": d.config.auth.header,
            "message": flash[0] if flash else None,
            "message_kind": flash[1] if flash else None}
    base.update(context)
    return templates.TemplateResponse(request, name, base, status_code=status)


def login_page(request: Request, *, status: int = 200, error: str | None = None,
               next_url: str = "/") -> HTMLResponse:
    return render(request, "login.html", status=status, error=error, next_url=next_url,
                  title="Log in")


def result(request: Request, text: str, *, ok: bool = True, status: int = 200,
           link: str | None = None, link_label: str = "") -> HTMLResponse:
    return render(request, "result.html", status=status, text=text,
                  kind="ok" if ok else "bad", link=link, link_label=link_label)


def back(request: Request, text: str, path: str) -> Response:
    request.session["flash"] = [text, "ok"]
    return Response(status_code=200, headers={"HX-Redirect": path})


def failed(request: Request, exc: ActionError) -> HTMLResponse:
    return result(request, str(exc), ok=False, status=exc.status)


def user_name(request: Request) -> str:
    return str(request.scope["state"]["user"].name)


# -- login -------------------------------------------------------------------------------
async def login(request: Request) -> Response:
    auth = dash(request).config.auth
    if request.method == "GET":
        return login_page(request, next_url=request.query_params.get("next", "/"))
    form = await request.form()
    if form.get("csrf_token") != request.session.get("csrf"):
        return login_page(request, status=403, error="Your session expired; try again.")
    user = auth.login(str(form.get("username", "")), str(form.get("password", "")))
    if user is None or auth.mode != "password":
        return login_page(request, status=401, error="Wrong user name or password.",
                          next_url=str(form.get("next") or "/"))
    request.session.clear()
    request.session.update({"user": user.name, "csrf": new_csrf_token()})
    target = str(form.get("next") or "/")
    return RedirectResponse(target if target.startswith("/") and not target.startswith("//")
                            else "/", status_code=303)


async def logout(request: Request) -> Response:
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


# -- overview ----------------------------------------------------------------------------
def _overview_context(request: Request) -> dict[str, Any]:
    d = dash(request)
    o = views.overview(d.app, d.history, d.ingestor, d.config.queue_targets)
    return {"o": o, "live_chart": views.throughput_chart(o["live"], label="last hour"),
            "day_chart": views.throughput_chart(o["day"], label="last 24 hours")}


async def overview(request: Request) -> Response:
    return render(request, "overview.html", active="/", title="Overview",
                  **_overview_context(request))


async def overview_fragment(request: Request) -> Response:
    return render(request, "_overview.html", **_overview_context(request))


# -- tasks -------------------------------------------------------------------------------
def _local_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise ActionError(f"not a date and time: {text!r}") from None


def parse_filter(params: Any) -> TaskFilter:
    flt = TaskFilter.from_params(params)
    flt.since = flt.since if flt.since is not None else _local_time(params.get("since_text"))
    flt.until = flt.until if flt.until is not None else _local_time(params.get("until_text"))
    return flt


def parse_cursor(text: str | None) -> tuple[float, str] | None:
    if not text:
        return None
    ts, _, tid = text.partition(":")
    try:
        return float(ts), tid
    except ValueError:
        raise ActionError(f"bad page cursor {text!r}") from None


def cursor_of(record: TaskRecord) -> str:
    return f"{record.ts!r}:{record.task_id}"


async def tasks(request: Request) -> Response:
    d = dash(request)
    started = time.perf_counter()
    try:
        flt = parse_filter(request.query_params)
        before = parse_cursor(request.query_params.get("before"))
    except (ActionError, ValueError) as exc:
        return render(request, "tasks.html", status=400, active="/tasks", flt=TaskFilter(),
                      tasks=[], more=False, before=None, query="", next_cursor="",
                      all_states=ALL_STATES, since_text="", until_text="",
                      elapsed_ms=0.0, message=str(exc), message_kind="bad")
    rows, more = d.history.page(flt, d.config.page_size, before)
    elapsed = (time.perf_counter() - started) * 1000

    def text_of(ts: float | None) -> str:
        return "" if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc).strftime(
            "%Y-%m-%dT%H:%M")

    return render(request, "tasks.html", active="/tasks", title="Tasks", flt=flt, tasks=rows,
                  more=more, before=before, query=urlencode(flt.as_params()),
                  next_cursor=cursor_of(rows[-1]) if rows else "", all_states=ALL_STATES,
                  since_text=text_of(flt.since), until_text=text_of(flt.until),
                  elapsed_ms=elapsed)


def workflow_graph(records: list[TaskRecord], root_id: str) -> str:
    """The tasks of one workflow as a tree of parent -> children (chains, chords, groups)."""
    by_parent: dict[str | None, list[TaskRecord]] = {}
    ids = {r.task_id for r in records}
    for r in sorted(records, key=lambda r: r.ts):
        parent = r.parent_id if r.parent_id in ids and r.parent_id != r.task_id else None
        by_parent.setdefault(parent, []).append(r)

    def branch(parent: str | None, depth: int) -> str:
        items = by_parent.get(parent, [])
        if not items or depth > 50:
            return ""
        return "<ul>" + "".join(
            f'<li><a href="/tasks/{html.escape(r.task_id)}">{html.escape(r.name or "?")}</a> '
            f'<span class="state state-{html.escape(r.state.lower())}">{html.escape(r.state)}'
            f"</span>{branch(r.task_id, depth + 1)}</li>" for r in items) + "</ul>"

    return branch(None, 0) if len(records) > 1 else ""


async def task_detail(request: Request) -> Response:
    d = dash(request)
    task_id = request.path_params["task_id"]
    record = d.history.get(task_id)
    if record is None:
        return render(request, "result.html", status=404, text=f"No task {task_id} in the "
                      f"history.", kind="bad", link=None)
    family = d.history.family(record.root_id) if record.root_id else []
    try:
        args, kwargs = d.actions.original_arguments(record)
        edit_args, edit_kwargs = _json(list(args)), _json(kwargs)
    except ActionError:
        edit_args, edit_kwargs = "[]", "{}"
    return render(request, "task.html", active="/tasks", title=record.name or task_id,
                  t=record, attempts=d.history.attempts(task_id),
                  children=d.history.children(task_id),
                  parent=record.parent_id if record.parent_id != task_id else None,
                  retries=d.history.retries_of(task_id),
                  graph=workflow_graph(family, record.root_id or task_id),
                  edit_args=edit_args, edit_kwargs=edit_kwargs)


def _json(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return "null"


async def task_retry(request: Request) -> Response:
    d = dash(request)
    form = await request.form()
    try:
        if form.get("edited"):
            args = parse_json_arg(str(form.get("args") or ""), list, "args")
            kwargs = parse_json_arg(str(form.get("kwargs") or ""), dict, "kwargs")
            new_id = d.actions.retry(request.path_params["task_id"], user_name(request),
                                     args=args, kwargs=kwargs)
        else:
            new_id = d.actions.retry(request.path_params["task_id"], user_name(request))
    except ActionError as exc:
        return failed(request, exc)
    return result(request, "Sent again as", link=f"/tasks/{new_id}", link_label=new_id)


async def task_revoke(request: Request) -> Response:
    d = dash(request)
    form = await request.form()
    terminate = bool(form.get("terminate"))
    d.actions.revoke([request.path_params["task_id"]], user_name(request),
                     terminate=terminate, signal=str(form.get("signal") or "") or None)
    return result(request, "Terminate requested." if terminate else "Revoked.")


BULK_LABELS = {"retry": "Retry", "revoke": "Revoke", "terminate": "Terminate",
               "purge": "Forget"}


async def bulk_confirm(request: Request) -> Response:
    d = dash(request)
    form = await request.form()
    action = str(form.get("action") or "")
    if action not in BULK_LABELS:
        return failed(request, ActionError(f"unknown bulk action {action!r}"))
    flt = parse_filter(form)
    count = d.actions.bulk_count(flt)
    return render(request, "confirm.html", post_url="/tasks/bulk", count=count, noun="task",
                  action_label=BULK_LABELS[action],
                  detail="forget removes them from the history only" if action == "purge"
                  else None,
                  fields={**flt.as_params(), "action": action, "confirmed": count})


async def bulk(request: Request) -> Response:
    d = dash(request)
    form = await request.form()
    try:
        confirmed = int(str(form.get("confirmed") or "-1"))
        outcome = d.actions.bulk(str(form.get("action") or ""), parse_filter(form), confirmed,
                                 user_name(request))
    except (ActionError, ValueError) as exc:
        return failed(request, exc if isinstance(exc, ActionError) else ActionError(str(exc)))
    text = f"{BULK_LABELS[outcome['action']]}: {outcome['done']} of {outcome['matched']} done"
    if outcome["failed"]:
        text += f"; {len(outcome['failed'])} failed ({outcome['failed'][0]['error']})"
    return result(request, text + ".", ok=not outcome["failed"])


def routes() -> list[Route]:
    return [
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", overview),
        Route("/fragments/overview", overview_fragment),
        Route("/tasks", tasks),
        Route("/tasks/bulk/confirm", bulk_confirm, methods=["POST"]),
        Route("/tasks/bulk", bulk, methods=["POST"]),
        Route("/tasks/{task_id}", task_detail),
        Route("/tasks/{task_id}/retry", task_retry, methods=["POST"]),
        Route("/tasks/{task_id}/revoke", task_revoke, methods=["POST"]),
    ]
