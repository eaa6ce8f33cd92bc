"""The dashboard process: the Starlette application, its auth and CSRF gate, and serving.

:class:`Dashboard` holds what every request uses (the Celery app, the
history store, the event ingestor, the actions). :func:`create_app` builds
the ASGI application: the session cookie, :class:`Gate` (who is asking, may
they, is the CSRF token right), the pages (:mod:`.pages`), the JSON API
(:mod:`.api`) and the static files served from this package (htmx, CSS):
the browser loads nothing from elsewhere. :func:`serve` runs it with uvicorn
after refusing a non-loopback address without auth.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import api, pages, pages_more
from .actions import Actions
from .auth import User, basic_credentials, check_binding, new_csrf_token
from .config import DashboardConfig
from .history import HistoryStore, open_database
from .ingest import Ingestor

logger = logging.getLogger("celeriac.dashboard")

#: Paths anyone may open: the login form, static files, the health probe.
PUBLIC = ("/login", "/static/", "/healthz")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass
class Dashboard:
    """One dashboard: the app it watches and its history."""

    app: Any
    config: DashboardConfig
    history: HistoryStore
    ingestor: Ingestor
    actions: Actions = field(init=False)
    receivers: list[Callable[[Dashboard], Callable[[], None]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.actions = Actions(self.app, self.history)

    @classmethod
    def open(cls, app: Any, config: DashboardConfig) -> Dashboard:
        history = HistoryStore(open_database(config.history_url))
        ingestor = Ingestor(history, app, retention=config.retention,
                            max_tasks=config.max_tasks,
                            refresh_interval=config.refresh_interval)
        return cls(app, config, history, ingestor)

    def close(self) -> None:
        self.ingestor.stop()
        self.history.close()


class Gate:
    """ASGI middleware: authenticates, checks the role and the CSRF token."""

    def __init__(self, app: ASGIApp, dashboard: Dashboard) -> None:
        self.app = app
        self.dashboard = dashboard
        self._basic_cache: dict[str, tuple[float, User]] = {}

    def _basic(self, header: str | None) -> User | None:
        creds = basic_credentials(header)
        if creds is None:
            return None
        key = hashlib.sha256((header or "").encode()).hexdigest()
        cached = self._basic_cache.get(key)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        user = self.dashboard.config.auth.login(*creds)
        if user is not None:
            if len(self._basic_cache) > 1000:
                self._basic_cache.clear()
            self._basic_cache[key] = (time.monotonic() + 60.0, user)
        return user

    def user_of(self, request: Request) -> tuple[User | None, bool]:
        """(the user, whether they came by an Authorization header)."""
        auth = self.dashboard.config.auth
        if auth.mode == "none":
            return User("local", "admin"), False
        if auth.mode == "header":
            name = request.headers.get(auth.header or "")
            return (auth.from_header(name.strip()) if name and name.strip() else None), False
        basic = self._basic(request.headers.get("authorization"))
        if basic is not None:
            return basic, True
        name = request.session.get("user")
        user = auth.users.get(name) if isinstance(name, str) else None
        return user, False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        session = request.session
        if "csrf" not in session:
            session["csrf"] = new_csrf_token()
        path = request.url.path
        if any(path == p or (p.endswith("/") and path.startswith(p)) for p in PUBLIC):
            await self.app(scope, receive, send)
            return
        user, by_header = self.user_of(request)
        if user is None:
            await self._deny(scope, receive, send, 401, "authentication required")
            return
        scope.setdefault("state", {})["user"] = user
        if request.method not in SAFE_METHODS:
            if not user.is_admin:
                await self._deny(scope, receive, send, 403, "this needs the admin role")
                return
            checked = await self._check_csrf(request, receive, by_header, session)
            if checked is None:
                await self._deny(scope, receive, send, 403, "missing or wrong CSRF token")
                return
            receive = checked
        await self.app(scope, receive, send)

    async def _check_csrf(self, request: Request, receive: Receive, by_header: bool,
                          session: dict[str, Any]) -> Receive | None:
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if by_header and content_type == "application/json":
            return receive  # a browser cannot send credentials + JSON cross-site
        expected = str(session.get("csrf") or "")
        given = request.headers.get("x-csrf-token")
        body = b""
        if given is None and content_type == "application/x-www-form-urlencoded":
            more = True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
            given = (parse_qs(body.decode("latin-1")).get("csrf_token") or [""])[0]
        if not expected or not given or not hmac.compare_digest(expected, given):
            return None
        if not body:
            return receive
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay

    async def _deny(self, scope: Scope, receive: Receive, send: Send, status: int,
                    reason: str) -> None:
        path = scope.get("path", "")
        response: Response
        if path.startswith("/api/") or path == "/metrics" or status == 403:
            headers = {"WWW-Authenticate": 'Basic realm="celeriac"'} if (
                status == 401 and self.dashboard.config.auth.mode == "password") else {}
            response = JSONResponse({"error": reason}, status_code=status, headers=headers)
        else:
            response = pages.login_page(Request(scope, receive), status=status, error=None,
                                  next_url=path)
        await response(scope, receive, send)


def create_app(dashboard: Dashboard, *, start_ingestor: bool = True) -> Starlette:
    """The ASGI application of ``dashboard``."""

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        stops = []
        if start_ingestor:
            dashboard.ingestor.start()
            for start in dashboard.receivers:
                stops.append(start(dashboard))
        try:
            yield
        finally:
            for stop in stops:
                stop()
            dashboard.ingestor.stop()

    routes = [*pages.routes(), *pages_more.routes(), *api.routes(),
              Mount("/static", StaticFiles(packages=[("celeriac.dashboard", "static")]),
                    name="static")]
    middleware = [
        Middleware(SessionMiddleware, secret_key=dashboard.config.secret_key,
                   session_cookie="celeriac_dashboard", same_site="strict", max_age=12 * 3600),
        Middleware(Gate, dashboard=dashboard),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.dashboard = dashboard
    return app


def serve(dashboard: Dashboard, *, log_level: str = "info") -> None:
    """Run the dashboard with uvicorn until interrupted."""
    import uvicorn

    config = dashboard.config
    check_binding(config.host, config.auth)
    uvicorn.run(create_app(dashboard), host=config.host, port=config.port,
                log_level=log_level.lower(), proxy_headers=config.auth.mode == "header")
