"""Celery's result metadata: building it, storing it, and turning failures back into exceptions.

Exceptions are stored as ``{"exc_type", "exc_message": [args], "exc_module"}``.
Reading them back never imports a module named in a result (CVE-2021-23727):
a failure is re-raised as its own class only when it subclasses ``Exception``
and is a builtin, a celeriac/Celery exception, or a class reachable by name
from the (already imported) module of a registered task and defined in the
module the result names. Anything else becomes a
:class:`~celeriac.exceptions.RemoteTaskError` carrying the type name and message.
"""

from __future__ import annotations

import builtins
import sys
import traceback as tb_module
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypedDict, cast

from .. import exceptions as exc_module_ours
from .. import serialization, states
from ..exceptions import RemoteTaskError
from .graph import ResultBase

if TYPE_CHECKING:
    from ..app.base import Celery

#: exception classes that exist under the same name in celery.exceptions
_CELERY_NAMES = {
    "Retry", "Ignore", "Reject", "MaxRetriesExceededError", "SoftTimeLimitExceeded",
    "TimeLimitExceeded", "TaskRevokedError", "WorkerLostError", "ChordError", "NotRegistered",
    "TimeoutError", "QueueNotFound", "TaskError", "ImproperlyConfigured", "OperationalError",
}
_OUR_MODULES = {"celeriac.exceptions", "celery.exceptions", "billiard.exceptions"}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def exception_to_dict(exc: BaseException) -> dict[str, Any]:
    cls = type(exc)
    module = cls.__module__
    if module == "celeriac.exceptions" and cls.__name__ in _CELERY_NAMES:
        module = "celery.exceptions"  # so a real Celery client recreates its own class
    if isinstance(exc, RemoteTaskError):
        return {"exc_type": exc.exc_type, "exc_message": list(exc.args),
                "exc_module": exc.exc_module}
    args = list(exc.args)
    try:
        serialization.json_dumps(args)
    except (TypeError, ValueError):
        args = [str(exc)]
    return {"exc_type": cls.__qualname__, "exc_message": args, "exc_module": module}


def _task_modules(app: Celery | None) -> set[str]:
    if app is None:
        return set()
    return {type(t).__module__ for t in app.tasks.values()}


def exception_from_dict(data: Any, app: Celery | None = None) -> BaseException:
    """Re-create a stored exception safely (see the module docstring)."""
    if not isinstance(data, dict) or "exc_type" not in data:
        return RemoteTaskError("Exception", None, str(data))
    name = str(data.get("exc_type") or "Exception")
    module = data.get("exc_module")
    module = str(module) if module is not None else None
    message = data.get("exc_message")
    if message is None:
        message = []
    args = tuple(message) if isinstance(message, (list, tuple)) else (message,)
    cls = _resolve_class(name, module, app)
    if cls is None:
        return RemoteTaskError(name, module, *args)
    try:
        return cls(*args)
    except Exception:
        return RemoteTaskError(name, module, *args)


def _resolve_class(name: str, module: str | None, app: Celery | None) -> type | None:
    """The exception class named by a result, if it is safe to use; never imports."""
    candidate: Any = None
    if module in (None, "builtins", "exceptions"):
        candidate = _lookup(builtins, name)
    elif module in _OUR_MODULES:
        candidate = _lookup(exc_module_ours, name)
    else:
        for task_module in _task_modules(app):
            found = _lookup(sys.modules.get(task_module), name)
            if isinstance(found, type) and found.__module__ == module:
                candidate = found
                break
    if (isinstance(candidate, type) and issubclass(candidate, Exception)
            and candidate.__qualname__ == name):
        return candidate
    return None


def _lookup(namespace: Any, dotted: str) -> Any:
    """``namespace.<dotted>`` through plain ``vars()`` (no ``__getattr__`` hooks, no privates)."""
    obj = namespace
    for part in dotted.split("."):
        if obj is None or not part or part.startswith("_"):
            return None
        try:
            obj = vars(obj).get(part)
        except TypeError:
            return None
    return obj


def format_traceback(exc: BaseException) -> str:
    return "".join(tb_module.format_exception(type(exc), exc, exc.__traceback__))


def encode_result(result: Any, state: str) -> Any:
    if isinstance(result, BaseException):
        return exception_to_dict(result)
    if isinstance(result, ResultBase):  # a task returned a result (Celery: its tuple form)
        return cast(Any, result).as_tuple()
    return result


class Wanted(TypedDict):
    reply: bool
    periodic: bool


def wanted_by(backend: Any) -> Wanted:
    """The request fields ``backend`` keeps beside Celery's meta (:func:`build_meta`'s
    ``reply`` and ``periodic``)."""
    return Wanted(reply=bool(getattr(backend, "wants_reply_to", False)),
                  periodic=bool(getattr(backend, "records_periodic_task_name", False)))


def build_meta(task_id: str, result: Any, state: str, *, traceback: str | None = None,
               request: Any = None, extended: bool = False,
               extra: Mapping[str, Any] | None = None, reply: bool = False,
               periodic: bool = False) -> dict[str, Any]:
    """Celery's result meta; ``reply`` adds the request's ``reply_to``/``correlation_id``
    for a store that sends results there (``ResultStore.wants_reply_to``), ``periodic``
    the beat entry that sent it (django-celery-beat's ``periodic_task_name`` header, for
    ``ResultStore.records_periodic_task_name``), known wherever the meta is written."""
    meta: dict[str, Any] = {
        "status": state,
        "result": encode_result(result, state),
        "traceback": traceback,
        "children": [c.as_tuple() for c in getattr(request, "children", None) or ()],
        "date_done": now_iso() if state in states.READY_STATES else None,
    }
    if request is not None:
        if getattr(request, "group", None):
            meta["group_id"] = request.group
        if getattr(request, "parent_id", None):
            meta["parent_id"] = request.parent_id
        if extended:
            info = request.delivery_info or {}
            meta.update({"name": request.task, "args": list(request.args or ()),
                         "kwargs": dict(request.kwargs or {}), "worker": request.hostname,
                         "retries": request.retries, "queue": info.get("routing_key")})
    if extra:
        meta.update(extra)
    if reply and getattr(request, "reply_to", None):
        meta["reply_to"] = request.reply_to
        meta["correlation_id"] = getattr(request, "correlation_id", None) or task_id
    if periodic and request is not None:
        for source in (getattr(request, "headers", None), getattr(request, "properties", None)):
            if isinstance(source, dict) and source.get("periodic_task_name"):
                meta["periodic_task_name"] = str(source["periodic_task_name"])
                break
    meta["task_id"] = task_id
    return meta


#: results JSON always encodes (exact types)
_SCALARS = frozenset({type(None), bool, int, float, str})


def surely_encodable(meta: Mapping[str, Any]) -> bool:
    """True for a meta JSON surely encodes without trying: a plain :func:`build_meta`
    (status, result, traceback, children, date_done, task_id, the request's group_id and
    parent_id: text its message held) with a scalar result and no children."""
    return (type(meta.get("result")) in _SCALARS and not meta.get("children")
            and len(meta) <= 8)


def store_result(app: Celery, task_id: str, result: Any, state: str, *,
                 traceback: str | None = None, request: Any = None,
                 extra: Mapping[str, Any] | None = None, **kwargs: Any) -> bool:
    """Store a task state in the app's result store; False when it was not written.

    Not written: results are disabled, the task already succeeded (as Celery:
    a redelivery or a late revoke never overwrites a success), or it was
    revoked (the store refuses any write over ``REVOKED``, atomically).
    ``extra`` adds keys to the meta (the revocation's ``terminate`` signal).
    """
    backend = app.backend
    if backend is None:
        return False
    meta = build_meta(task_id, result, state, traceback=traceback, request=request,
                      extended=bool(app.conf.result_extended), extra=extra,
                      **wanted_by(backend))
    expires = app.result_expires_for(state)
    if state == states.SUCCESS:
        return backend.set(task_id, meta, expires=expires) is not False
    return backend.set_unless_succeeded(task_id, meta, expires=expires) is not False
