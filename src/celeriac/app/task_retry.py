"""What ``Task.retry`` re-publishes: the same task id, ``retries + 1``, the caller's options.

:func:`retry_signature` rebuilds the call from the running request (queue,
priority, links, chain, chord, custom headers, time limits, expiry, shadow,
``ignore_result``) as Celery's ``signature_from_request`` does, and keeps
``argsrepr``/``kwargsrepr`` when the arguments are unchanged (Celery drops
them, so a retry would log the secrets they masked);
:func:`merge_arguments` follows Celery 5.7 when only ``args`` or only
``kwargs`` is given to ``retry``, so an argument is never passed twice.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..canvas.signature import Signature
from ..messages import STANDARD_HEADERS

if TYPE_CHECKING:
    from .context import Context
    from .task import Task


def merge_arguments(run: Callable[..., Any], request: Context, args: Any, kwargs: Any
                    ) -> tuple[Any, Any]:
    """``(args, kwargs)`` for the retry; ``None`` means "as in the request"."""
    only_args = args is not None and kwargs is None and request.kwargs
    only_kwargs = kwargs is not None and args is None and request.args
    if not (only_args or only_kwargs):
        return args, kwargs
    try:
        sig = inspect.signature(run)
    except (TypeError, ValueError):
        return args, kwargs
    if only_args:
        positional = [p for p in sig.parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        merged = dict(request.kwargs)
        for param in positional[:len(tuple(args))]:
            if param.kind == param.POSITIONAL_OR_KEYWORD:
                merged.pop(param.name, None)
        return args, merged
    try:
        bound = sig.bind_partial(*request.args)
    except TypeError:
        return args, kwargs
    rest = dict(kwargs)
    for name in list(rest):
        if (name in bound.arguments
                and sig.parameters[name].kind == inspect.Parameter.POSITIONAL_OR_KEYWORD):
            bound.arguments[name] = rest.pop(name)
    return bound.args, {**bound.kwargs, **rest}


def user_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The headers a caller added (``apply_async(headers=...)``), to keep on retry."""
    if not headers:
        return {}
    return {k: v for k, v in headers.items()
            if k not in STANDARD_HEADERS and k not in ("redelivered", "compression")}


def retry_signature(task: Task, request: Context, args: Any, kwargs: Any, retries: int,
                    eta: datetime | None, countdown: float | None,
                    options: dict[str, Any]) -> Signature:
    """The signature ``retry`` publishes for ``request``."""
    timelimit = request.timelimit or (None, None)
    opts: dict[str, Any] = {
        "task_id": request.id, "retries": retries, "root_id": request.root_id,
        "parent_id": request.parent_id, "group_id": request.group,
        "group_index": request.group_index, "link": request.callbacks,
        "link_error": request.errbacks, "chain": request.chain, "chord": request.chord,
        "headers": user_headers(request.headers), "time_limit": timelimit[0],
        "soft_time_limit": timelimit[1], "expires": request.expires,
        "ignore_result": bool(request.ignore_result),
        "replaced_task_nesting": request.replaced_task_nesting or 0,
        "shadow": request.shadow, "reply_to": request.reply_to,
    }
    if args is None and kwargs is None:  # same arguments: keep their masked reprs
        opts.update(argsrepr=request.argsrepr, kwargsrepr=request.kwargsrepr)
    if (request.headers or {}).get("compression"):
        opts["compression"] = request.headers["compression"]
    info = request.delivery_info or {}
    if info.get("routing_key") and "queue" not in options:
        opts["queue"] = info["routing_key"]
    if info.get("priority") is not None:
        opts["priority"] = info["priority"]
    if eta is not None:
        opts["eta"] = eta
    else:
        opts["countdown"] = countdown
    opts.update(options)
    args, kwargs = merge_arguments(task.run, request, args, kwargs)
    return Signature(task, request.args if args is None else args,
                     request.kwargs if kwargs is None else kwargs, opts, app=task._app)
