"""The web dashboard: persistent task history, actions, queues, schedules, dead letters.

``celeriac -A proj dashboard --port 5555`` serves it (:mod:`celeriac.cli.dashboard`);
it needs the ``dashboard`` extra (Starlette, Jinja2, uvicorn). Parts:
:mod:`.history` (the store), :mod:`.ingest` (events in), :mod:`.actions`
(what buttons do), :mod:`.views` (page data), :mod:`.pages`/:mod:`.pages_more`
(HTML), :mod:`.api` (JSON + OpenAPI), :mod:`.auth`, :mod:`.config`,
:mod:`.server`. See docs/dashboard.md.
"""

from __future__ import annotations

__all__ = ["Dashboard", "DashboardConfig", "create_app"]


def __getattr__(name: str) -> object:
    # the web parts import Starlette: only when asked for, so the history works without it
    if name in ("Dashboard", "create_app"):
        from . import server

        return getattr(server, name)
    if name == "DashboardConfig":
        from .config import DashboardConfig

        return DashboardConfig
    raise AttributeError(name)
