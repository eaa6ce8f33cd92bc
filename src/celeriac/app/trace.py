"""Running one task: the tracer shared by the worker and by ``apply()``/eager mode.

:class:`Tracer` turns a request into an :class:`Outcome` (SUCCESS, FAILURE,
RETRY, IGNORED, REJECTED), storing states, calling the task's hooks, firing
signals and following links/chains through :mod:`celeriac.canvas.callbacks`. The
request it runs is one :class:`~celeriac.app.context.Context` (the worker's
:class:`~celeriac.app.request.Request`, built once per delivery), pushed as
``task.request`` without copying. One driver, ``begin`` -> body ->
``ended``: :meth:`Tracer.run` for sync bodies (eager mode and every pool),
:meth:`Tracer.run_async` for bodies awaited on an event loop.
An error raised by a task hook (``on_success``...) is logged and sent as
``task_internal_error``, as Celery does; it does not change the outcome. A
follow-up step that fails after the body ran (a link, the next chain step, the
chord join) is handed to ``followup_failed`` (the worker records and
dead-letters it) and never makes the body run again. Log lines show results
and exceptions cut to the task's ``resultrepr_maxsize``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import signals, states
from ..canvas.callbacks import FollowupHandler, after_failure, after_success
from ..exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded, TimeLimitExceeded
from ..results.async_result import EagerResult
from ..results.meta import build_meta, format_traceback, store_result, surely_encodable, wanted_by
from ..results.store import encode_meta
from ..utils.log import bounded, bounded_lines
from . import state as _state
from .context import Context

if TYPE_CHECKING:
    from .task import Task

logger = logging.getLogger("celeriac.worker.trace")

#: runs a blocking phase off the event loop: ``await offload(fn, *args)``
Offload = Callable[..., Awaitable[Any]]


class ExceptionInfo:
    """Celery's ``einfo``: the exception with its formatted traceback."""

    def __init__(self, exc: BaseException) -> None:
        self.exception = exc
        self.type = type(exc)
        self.tb = exc.__traceback__
        self.traceback = format_traceback(exc)

    def __str__(self) -> str:
        return self.traceback


@dataclass
class Outcome:
    """How a run ended, and what the worker should do with the message."""

    state: str
    retval: Any = None
    exc: BaseException | None = None
    traceback: str | None = None
    requeue: bool = False
    runtime: float = 0.0


def store_retry(task: Task, request: Context, exc: Retry) -> None:
    """RETRY for ``request``, stored before ``Task.retry`` sends the new message (Celery
    stores it after, so a fast retried run's SUCCESS can be overwritten by it)."""
    reason = exc.exc if isinstance(exc.exc, BaseException) else exc
    store_result(task.app, request.id, reason, states.RETRY,
                 traceback=ExceptionInfo(reason).traceback, request=request)
    exc.state_stored = True


class Tracer:
    """Runs one task request through its whole life cycle.

    The driver is :meth:`run` (sync bodies: eager mode and every worker pool)
    or :meth:`run_async` (``async def`` bodies awaited on an event loop); both
    are ``begin`` -> body -> :meth:`ended`, so what an ending means (retry,
    ignore, reject, failure, success, the request unwound) is decided in one
    place.
    """

    def __init__(self, task: Task, request: Context, *, store: bool = True,
                 propagate: bool = False, guard: Callable[[], bool] | None = None,
                 result_sink: Callable[[str, dict[str, Any]], None] | None = None,
                 followup_failed: FollowupHandler | None = None) -> None:
        self.task = task
        self.app = task.app
        self.request = request
        self.store = store and not (request.ignore_result or task.ignore_result)
        self.propagate = propagate
        self.guard = guard
        #: where a plain SUCCESS meta goes instead of an immediate write (worker batching)
        self.result_sink = result_sink
        #: called when a follow-up step (link, chain, chord, errback) fails after the body
        #: ran; None (eager mode) lets the error propagate
        self.followup_failed = followup_failed
        self._token: Any = None
        self._started = 0.0
        self.task_id = str(request.id)

    # -- the drivers ----------------------------------------------------------------
    def run(self, body: Callable[[Context], Any] | None = None) -> Outcome:
        """Begin, run ``body(request)`` (default: the task, awaiting a coroutine), end."""
        try:
            ctx = self.begin()
            retval = (body or self._call)(ctx)
        except BaseException as exc:
            return self.ended(error=exc)
        return self.ended(retval)

    async def run_async(self, body: Callable[[Context], Awaitable[Any]],
                        offload: Offload | None = None) -> Outcome:
        """:meth:`run` for an awaitable body; ``offload(fn, *args)`` runs the blocking
        phases (state writes, hooks, follow-ups) off the event loop."""
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()

        async def inline(fn: Callable[..., Any], *args: Any) -> Any:
            return fn(*args)

        phase = offload or inline
        try:
            request = await phase(ctx.run, self.begin)
            # the body's task runs in a copy of ctx: it sees the request pushed by begin
            retval: Any = await ctx.run(loop.create_task, _awaited(body(request)))
        except BaseException as exc:
            result: Outcome = await phase(ctx.run, self.ended, None, exc)
            return result
        result = await phase(ctx.run, self.ended, retval)
        return result

    def _call(self, ctx: Context) -> Any:
        result = body_of(self.task)(*ctx.args, **ctx.kwargs)
        if inspect.isawaitable(result):
            result = run_coroutine(result, reuse_loop=not ctx.is_eager)
        return result

    # -- phases -----------------------------------------------------------------
    def begin(self) -> Context:
        task, req = self.task, self.request
        self._started = time.monotonic()
        self._token = _state.push_task(task)
        task.push_request(req)
        signals.task_prerun.send(sender=task, task_id=self.task_id, task=task,
                                 args=req.args, kwargs=req.kwargs)
        if task.track_started and self.store and not req.is_eager:  # as Celery
            store_result(self.app, self.task_id,
                         {"pid": os.getpid(), "hostname": req.hostname},
                         states.STARTED, request=req)
        task.before_start(self.task_id, req.args, req.kwargs)
        return req

    def ended(self, retval: Any = None, error: BaseException | None = None) -> Outcome:
        """Record how the body ended; the request is unwound whatever happens.

        An exception listed in ``autoretry_for`` becomes a retry; a
        ``BaseException`` that is not a time limit (shutdown, cancellation)
        is re-raised after unwinding.
        """
        try:
            if error is None:
                return self.succeeded(retval)
            if not isinstance(error, Exception) and not _is_time_limit(error):
                raise error
            try:
                self.autoretry(error)
            except Exception as retry:
                return self.failed(retry)
            return self.failed(error)
        finally:
            self._unwind()

    def autoretry(self, exc: BaseException) -> None:
        """Turn an exception listed in autoretry_for into a retry (raises Retry)."""
        task = self.task
        if not task.autoretry_for or isinstance(exc, (Retry, Ignore, Reject)):
            return
        if not isinstance(exc, task.autoretry_for):
            return
        if task.dont_autoretry_for and isinstance(exc, task.dont_autoretry_for):
            return
        options = dict(task.retry_kwargs or {})
        countdown = task.autoretry_countdown()
        if countdown is not None:
            options["countdown"] = countdown
        task.retry(exc=exc, **options)

    def succeeded(self, retval: Any) -> Outcome:
        task, ctx = self.task, self.request
        if not self._still_owner():
            return self._finish(Outcome(states.SUCCESS, retval))
        if self.store:
            try:
                self._store_success(retval, ctx)
            except (TypeError, ValueError) as exc:
                err = TypeError(f"cannot serialize the result of {task.name}: {exc}")
                return self.failed(err)
        self._hook(task.on_success, retval, self.task_id, ctx.args, ctx.kwargs)
        if ctx.callbacks or ctx.chain or ctx.chord:
            after_success(task, ctx, retval, self.followup_failed)
        signals.task_success.send(sender=task, result=retval)
        self._hook(task.after_return, states.SUCCESS, retval, self.task_id, ctx.args,
                   ctx.kwargs, None)
        return self._finish(Outcome(states.SUCCESS, retval))

    def _store_success(self, retval: Any, ctx: Context) -> None:
        """Store SUCCESS now, or hand it to the result sink when nothing can observe the
        delay: no callbacks, chain, chord or group, and no on_success/after_return hook
        (those run after the result is stored and might read it)."""
        if self.result_sink is None or not self._batchable(ctx):
            if not store_result(self.app, self.task_id, retval, states.SUCCESS, request=ctx):
                self._refused(states.SUCCESS)
            return
        meta = build_meta(self.task_id, retval, states.SUCCESS, request=ctx,
                          extended=bool(self.app.conf.result_extended),
                          **wanted_by(self.app.backend))
        if not surely_encodable(meta):  # else TypeError/ValueError now, not at the write
            encode_meta(meta)
        self.result_sink(self.task_id, meta)

    def _refused(self, state: str) -> None:
        logger.info("Task %s[%s]: %s not stored, the task was revoked (REVOKED stays)",
                    self.task.name, self.task_id, state)

    def _batchable(self, ctx: Context) -> bool:
        return not (ctx.callbacks or ctx.chain or ctx.chord or ctx.group
                    or type(self.task).has_result_hooks())

    def failed(self, exc: BaseException) -> Outcome:
        if isinstance(exc, Retry):
            return self._retried(exc)
        if isinstance(exc, Ignore):
            return self._finish(Outcome(states.IGNORED, exc, exc))
        if isinstance(exc, Reject):
            return self._finish(Outcome(states.REJECTED, exc, exc, requeue=exc.requeue))
        return self._failure(exc)

    def _retried(self, exc: Retry) -> Outcome:
        task, ctx = self.task, self.request
        reason = exc.exc if isinstance(exc.exc, BaseException) else exc
        einfo = ExceptionInfo(reason)
        if self._still_owner() and not ctx.is_eager and not exc.state_stored:
            store_result(self.app, self.task_id, reason, states.RETRY,
                         traceback=einfo.traceback, request=ctx)
        self._hook(task.on_retry, reason, self.task_id, ctx.args, ctx.kwargs, einfo)
        signals.task_retry.send(sender=task, request=ctx, reason=reason, einfo=einfo)
        logger.info("Task %s[%s] retry: %s", task.name, self.task_id,
                    bounded(exc, task, str))
        return self._finish(Outcome(states.RETRY, exc, exc, einfo.traceback))

    def _failure(self, exc: BaseException) -> Outcome:
        task, ctx = self.task, self.request
        einfo = ExceptionInfo(exc)
        owner = self._still_owner()
        if owner and (self.store or task.store_errors_even_if_ignored) and not store_result(
                self.app, self.task_id, exc, states.FAILURE, traceback=einfo.traceback,
                request=ctx):
            self._refused(states.FAILURE)
        self._hook(task.on_failure, exc, self.task_id, ctx.args, ctx.kwargs, einfo)
        if owner:
            after_failure(task, ctx, exc, einfo, self.followup_failed)
        signals.task_failure.send(sender=task, task_id=self.task_id, exception=exc,
                                  args=ctx.args, kwargs=ctx.kwargs, traceback=einfo.tb,
                                  einfo=einfo)
        self._hook(task.after_return, states.FAILURE, exc, self.task_id, ctx.args, ctx.kwargs,
                   einfo)
        if not isinstance(exc, task.throws or ()):
            logger.error("Task %s[%s] raised unexpected: %s%s", task.name, self.task_id,
                         bounded(exc, task),
                         "" if ctx.is_eager else "\n" + bounded_lines(einfo.traceback, task))
        outcome = self._finish(Outcome(states.FAILURE, exc, exc, einfo.traceback))
        if self.propagate:
            raise exc
        return outcome

    def _hook(self, hook: Callable[..., Any], *args: Any) -> None:
        """Call a task hook; an error in it is logged, as Celery's internal errors are."""
        try:
            hook(*args)
        except Exception as exc:
            logger.exception("Task %s[%s]: %s raised", self.task.name, self.task_id,
                             getattr(hook, "__name__", hook))
            signals.task_internal_error.send(sender=self.task, task_id=self.task_id,
                                             args=self.request.args,
                                             kwargs=self.request.kwargs,
                                             request=self.request, exception=exc,
                                             traceback=exc.__traceback__, einfo=None)

    def _still_owner(self) -> bool:
        return self.guard is None or self.guard()

    def _finish(self, outcome: Outcome) -> Outcome:
        task = self.task
        outcome.runtime = time.monotonic() - self._started
        ctx = self.request
        signals.task_postrun.send(sender=task, task_id=self.task_id, task=task, args=ctx.args,
                                  kwargs=ctx.kwargs, retval=outcome.retval, state=outcome.state)
        self._unwind()
        return outcome

    def _unwind(self) -> None:
        if self._token is not None:
            self.task.pop_request()
            _state.pop_task(self._token)
            self._token = None


def _is_time_limit(exc: BaseException) -> bool:
    return isinstance(exc, (SoftTimeLimitExceeded, TimeLimitExceeded))


def body_of(task: Any) -> Callable[..., Any]:
    """What runs a task's body: the task object when its class overrides ``__call__``
    (Celery's rule: such a base wraps every run of its tasks), else ``task.run``."""
    return task if getattr(task, "custom_call", False) else task.run


_loops = threading.local()


def run_coroutine(awaitable: Any, reuse_loop: bool = True) -> Any:
    """Run an ``async def`` task body to completion.

    Worker threads keep one event loop each (``reuse_loop``); eager runs use a
    fresh loop. Called from code already inside a running loop (a sync
    ``delay()`` in eager mode from async code), the body runs on a helper thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        with concurrent.futures.ThreadPoolExecutor(1, "celeriac-eager") as pool:
            return pool.submit(asyncio.run, _awaited(awaitable)).result()
    if not reuse_loop:
        return asyncio.run(_awaited(awaitable))
    loop = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _loops.loop = loop
    return loop.run_until_complete(awaitable)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def apply_eagerly(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], *,
                  task_id: str | None, retries: int, throw: bool | None, link: Any,
                  link_error: Any, options: dict[str, Any]) -> EagerResult:
    app = task.app
    task_id = task_id or str(uuid.uuid4())
    parent = _state.get_current_task()
    request = Context(
        id=task_id, task=task.name, args=args, kwargs=kwargs, retries=retries, is_eager=True,
        called_directly=False, callbacks=_as_list(link), errbacks=_as_list(link_error),
        headers=options.get("headers"),
        delivery_info={"is_eager": True, "exchange": None, "routing_key": options.get("queue"),
                       "priority": options.get("priority"), "redelivered": False},
        hostname=options.get("hostname") or socket.gethostname(),
        root_id=options.get("root_id") or (parent.request.root_id if parent else None)
        or task_id,
        parent_id=options.get("parent_id") or (parent.request.id if parent else None),
        group=options.get("group_id"), group_index=options.get("group_index"),
        chain=options.get("chain"), chord=options.get("chord"),
        ignore_result=options.get("ignore_result", False),
        timelimit=(options.get("time_limit"), options.get("soft_time_limit")),
        eta=options.get("eta"), expires=options.get("expires"),
        argsrepr=options.get("argsrepr"), kwargsrepr=options.get("kwargsrepr"))
    propagate = app.conf.task_eager_propagates if throw is None else throw
    tracer = Tracer(task, request, store=bool(app.conf.task_store_eager_result),
                    propagate=bool(propagate))
    outcome = tracer.run()
    if isinstance(outcome.retval, Retry) and outcome.retval.sig is not None:
        return outcome.retval.sig.apply(retries=retries + 1, throw=throw)
    return EagerResult(task_id, outcome.retval, outcome.state, traceback=outcome.traceback,
                       name=task.name, app=app)


def _as_list(value: Any) -> list[Any] | None:
    if value is None:
        return None
    return list(value) if isinstance(value, (list, tuple)) else [value]
