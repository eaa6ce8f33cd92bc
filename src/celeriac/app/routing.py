"""Routing: which queue a task message goes to (``task_routes``, task options, defaults).

``task_routes`` takes Celery's forms: a dict keyed by task name, glob
(``"feed.tasks.*"``) or compiled regex, mapping to a queue name or an
options dict; a list of such dicts and/or router callables; or a callable
``router(name, args, kwargs, options, task=None, **kw)`` returning a queue
name, an options dict or None. Explicit call options win over routes, as
Celery's ``lpmerge`` does.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from typing import Any

Route = Mapping[str, Any]


def _expand(route: Any) -> dict[str, Any]:
    if route is None:
        return {}
    if isinstance(route, str):
        return {"queue": route}
    if hasattr(route, "name") and not isinstance(route, Mapping):  # a kombu-like Queue
        return {"queue": route.name}
    out = dict(route)
    queue = out.get("queue")
    if queue is not None and not isinstance(queue, str) and hasattr(queue, "name"):
        out["queue"] = queue.name
    return out


def _match_map(routes: Mapping[Any, Any], name: str) -> Any:
    if name in routes:
        return routes[name]
    for key, route in routes.items():
        if isinstance(key, re.Pattern):
            if key.match(name):
                return route
        elif isinstance(key, str) and any(c in key for c in "*?[") and fnmatch.fnmatchcase(
                name, key):
            return route
    return None


def _routers(setting: Any) -> list[Any]:
    if setting is None:
        return []
    if isinstance(setting, (list, tuple)):
        return list(setting)
    return [setting]


def lookup_route(setting: Any, name: str, args: Any, kwargs: Any, options: Mapping[str, Any],
                 task: Any = None) -> dict[str, Any]:
    """Return the first matching route for ``name`` as an options dict."""
    for router in _routers(setting):
        if isinstance(router, Mapping):
            found = _match_map(router, name)
        elif callable(router):
            found = _call_router(router, name, args, kwargs, options, task)
        else:
            raise TypeError(f"task_routes: cannot route with {router!r}")
        if found is not None:
            return _expand(found)
    return {}


def _call_router(router: Callable[..., Any], name: str, args: Any, kwargs: Any,
                 options: Mapping[str, Any], task: Any) -> Any:
    route_for_task = getattr(router, "route_for_task", None)
    if route_for_task is not None:  # Celery's old class-based routers
        return route_for_task(name, args, kwargs)
    return router(name, args, kwargs, dict(options), task=task)


def route(conf: Mapping[str, Any], name: str, args: Any, kwargs: Any,
          options: Mapping[str, Any], task: Any = None) -> dict[str, Any]:
    """Merge routes under explicit options; fill in the default queue."""
    explicit = {k: v for k, v in _expand(options).items() if v is not None}
    merged = {**lookup_route(conf.get("task_routes"), name, args, kwargs, options, task),
              **explicit}
    if not merged.get("queue"):
        merged["queue"] = merged.get("routing_key") or conf.get("task_default_queue") or "celery"
    return merged
