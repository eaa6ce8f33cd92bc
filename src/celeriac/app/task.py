"""The Task class: options, hooks, calling (delay/apply_async/apply), retry and update_state.

A task is a class with a ``run`` method; ``@app.task`` builds one from a function. Calling the task
object runs it in-process (``called_directly``); ``delay``/``apply_async`` publish a message (or
run eagerly with ``task_always_eager``); ``apply`` runs locally through the same tracer the worker
uses, returning an :class:`~celeriac.result.EagerResult`.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from .. import hooks, states
from ..canvas.callbacks import replace as replace_task
from ..canvas.maps import chunks as chunks_signature
from ..canvas.maps import xmap, xstarmap
from ..canvas.signature import Signature
from ..events.dispatcher import EventDispatcher, client_hostname
from ..exceptions import Ignore, MaxRetriesExceededError, OperationalError, Reject, Retry
from ..messages import saferepr
from ..results.downloads import Download, result_store, save_download
from ..results.meta import store_result
from ..retry import exponential_backoff
from . import state as _state
from .arguments import check_arguments
from .context import Context
from .limits import publish_unique
from .publish import build_message
from .task_retry import retry_signature
from .templates import publish_plain
from .trace import apply_eagerly, store_retry

if TYPE_CHECKING:
    from ..results.async_result import AsyncResult, EagerResult
    from .base import Celery

#: per task object, its stack of requests; replaced (never mutated) on push/pop so
#: asyncio tasks and threads that copy the context never share a stack
_REQUESTS: contextvars.ContextVar[Mapping[int, tuple[Context, ...]]] = contextvars.ContextVar(
    "celeriac_requests", default=MappingProxyType({}))


class _FromConfig:
    """A task option that reads its app's setting unless a (sub)class sets it.

    Celery binds these when the app is finalized; reading them at access time
    means a setting changed after ``@app.task`` still applies.
    """

    def __init__(self, setting: str) -> None:
        self.setting = setting

    def __get__(self, instance: Any, owner: type[Task]) -> Any:
        app = owner._app if owner._app is not None else _state.get_current_app()
        return app.conf.get(self.setting)


class Task:
    """Base class of tasks, with Celery's attributes and defaults."""

    name: ClassVar[str | None] = None
    _app: ClassVar[Celery | None] = None
    typing: ClassVar[bool] = True
    max_retries: int | None = 3
    default_retry_delay: float = 180
    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: dict[str, Any] = {}
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600
    retry_jitter: bool = True
    # read from the app's configuration at access time unless the task sets them
    rate_limit: Any = _FromConfig("task_default_rate_limit")
    ignore_result: Any = _FromConfig("task_ignore_result")
    store_errors_even_if_ignored: Any = _FromConfig("task_store_errors_even_if_ignored")
    time_limit: Any = _FromConfig("task_time_limit")
    soft_time_limit: Any = _FromConfig("task_soft_time_limit")
    acks_late: Any = _FromConfig("task_acks_late")
    acks_on_failure_or_timeout: Any = _FromConfig("task_acks_on_failure_or_timeout")
    acks_on_failure: Any = _FromConfig("task_acks_on_failure")  # None: the one above
    acks_on_timeout: Any = _FromConfig("task_acks_on_timeout")  # None: the one above too
    reject_on_worker_lost: Any = _FromConfig("task_reject_on_worker_lost")
    retry_on_worker_lost: Any = _FromConfig("task_retry_on_worker_lost")
    track_started: Any = _FromConfig("task_track_started")
    serializer: Any = _FromConfig("task_serializer")
    queue: str | None = None
    priority: int | None = None
    expires: float | datetime | None = None
    #: a task with pydantic arguments: how its calls are dumped (celeriac.app.registry)
    _model_calls: Any = None
    # per-task publish options a subclass may set (None: the call's or the setting's)
    compression: str | None = None
    routing_key: str | None = None
    exchange: str | None = None
    throws: tuple[type[BaseException], ...] = ()
    send_events: bool = True
    trail: bool = True
    resultrepr_maxsize: int = 1024
    abstract: ClassVar[bool] = True
    # concurrency limits and unique calls (celeriac.app.limits, docs/commcare.md)
    concurrency_limit: int | None = None
    concurrency_key: Any = None
    on_busy: str = "requeue"
    busy_countdown: float = 1.0
    unique_for: float | None = None
    unique_key: Any = None
    request_stack: Any = None
    #: set by @app.task when the function takes ``self``
    bind: ClassVar[bool] = False

    MaxRetriesExceededError = MaxRetriesExceededError
    OperationalError = OperationalError
    #: True for a class (or base) overriding ``__call__``: the worker calls the task
    #: object then, not ``run`` (Celery's rule), so the override wraps every run
    custom_call: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.custom_call = cls.__call__ is not Task.__call__

    # -- app binding ------------------------------------------------------------
    @property
    def app(self) -> Celery:
        return self._app if self._app is not None else _state.get_current_app()

    @property
    def backend(self) -> Any:
        return self.app.backend

    @classmethod
    def bind_app(cls, app: Celery) -> None:
        """Attach the task class to ``app`` (options left unset follow ``app.conf``)."""
        cls._app = app

    # -- running ----------------------------------------------------------------
    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("Tasks must define the run method.")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.request_stack_empty():
            token = _state.push_task(self)
            self.push_request(args=args, kwargs=kwargs, called_directly=True)
            try:
                return self.run(*args, **kwargs)
            finally:
                self.pop_request()
                _state.pop_task(token)
        return self.run(*args, **kwargs)

    # -- request context ----------------------------------------------------------
    def _stack(self) -> tuple[Context, ...]:
        return _REQUESTS.get().get(id(self), ())

    def request_stack_empty(self) -> bool:
        return not self._stack()

    def push_request(self, *args: Any, **kwargs: Any) -> None:
        """Push a request: a :class:`Context` (the worker's request object, pushed as is)
        or the mappings/fields to build one from."""
        if len(args) == 1 and isinstance(args[0], Context) and not kwargs:
            request = args[0]
        else:
            request = Context(*args, **kwargs)
        # immutable updates: asyncio tasks copy the context, and must not share stacks
        stacks = _REQUESTS.get()
        _REQUESTS.set({**stacks, id(self): (*stacks.get(id(self), ()), request)})

    def pop_request(self) -> None:
        stacks = _REQUESTS.get()
        stack = stacks.get(id(self), ())
        if stack:
            _REQUESTS.set({**stacks, id(self): stack[:-1]})

    @property
    def request(self) -> Context:
        stack = self._stack()
        return stack[-1] if stack else Context()

    # -- calling ---------------------------------------------------------------------
    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Iterable[Any] | None = None,
                    kwargs: Mapping[str, Any] | None = None, task_id: str | None = None,
                    producer: Any = None, link: Any = None, link_error: Any = None,
                    shadow: str | None = None, **options: Any) -> AsyncResult:
        args = tuple(args or ())
        kwargs = dict(kwargs or {})
        if producer is not None:  # Celery's kombu producer: reported, see publish.py
            options["producer"] = producer
        if self.typing:
            self._check_arguments(args, kwargs)
        calls = self._model_calls
        if calls is not None and options.get("serializer") != "pickle":
            args, kwargs = calls.dump_arguments(args, kwargs, bound=bool(self.bind))
        app = self.app
        if app.conf.task_always_eager:
            task_id = task_id or str(uuid.uuid4())
            if app.conf.task_eager_check_serializable:
                # the worker's message, built and dropped: unserializable arguments fail here
                build_message(app, self.name or "", list(args), kwargs, task_id,
                              {"link": link, "link_error": link_error, "task": self,
                               **options})
            return self.apply(args, kwargs, task_id=task_id,
                              link=link, link_error=link_error, **options)
        if self.unique_for:
            return publish_unique(self, args, kwargs, task_id, lambda tid: app.send_task(
                self.name or "", args, kwargs, task_id=tid, link=link, link_error=link_error,
                shadow=shadow, task=self, **options))
        if not options and link is None and link_error is None and shadow is None:
            # a plain call: its template's lane (see app.templates)
            sent = publish_plain(app, self, args, kwargs, task_id)  # type: ignore[arg-type]
            if sent is not None:
                return app.AsyncResult(sent, task_name=self.name)
        return app.send_task(self.name or "", args, kwargs, task_id=task_id, link=link,
                             link_error=link_error, shadow=shadow, task=self, **options)

    def delay_on_commit(self, *args: Any, **kwargs: Any) -> None:
        """``delay`` once the current database transaction commits (Celery 5.4's API).

        Nothing is sent if the transaction rolls back; outside a transaction the
        task is sent at once. Returns None, as in Celery: the task id is not known
        until the call happens. Needs a transaction integration (Django, Pyramid).
        """
        hooks.on_commit(functools.partial(self.delay, *args, **kwargs))

    def apply_async_on_commit(self, args: Iterable[Any] | None = None,
                              kwargs: Mapping[str, Any] | None = None,
                              **options: Any) -> None:
        """``apply_async`` once the current database transaction commits."""
        hooks.on_commit(functools.partial(self.apply_async, args, kwargs, **options))

    async def delay_async(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """``delay`` for asyncio code: publishes without blocking the event loop."""
        return await self.apply_async_async(args, kwargs)

    async def apply_async_async(self, args: Iterable[Any] | None = None,
                                kwargs: Mapping[str, Any] | None = None,
                                **options: Any) -> AsyncResult:
        """``apply_async`` for asyncio code (runs the publish in a worker thread)."""
        return await asyncio.to_thread(self.apply_async, args, kwargs, **options)

    def apply(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              link: Any = None, link_error: Any = None, task_id: str | None = None,
              retries: int | None = None, throw: bool | None = None, **options: Any
              ) -> EagerResult:
        return apply_eagerly(self, tuple(args or ()), dict(kwargs or {}), task_id=task_id,
                             retries=retries or 0, throw=throw, link=link,
                             link_error=link_error, options=options)

    def _check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        check_arguments(self, args, kwargs)

    def AsyncResult(self, task_id: str, **kwargs: Any) -> AsyncResult:
        return self.app.AsyncResult(task_id, task_name=self.name, **kwargs)

    # -- signatures ------------------------------------------------------------------
    def signature(self, args: Iterable[Any] | None = None, *starargs: Any, **starkwargs: Any
                  ) -> Signature:
        starkwargs.setdefault("app", self._app)
        return Signature(self, args, *starargs, **starkwargs)

    subtask = signature

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        return self.signature(args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        return self.signature(args, kwargs, immutable=True)

    # -- retry and state ---------------------------------------------------------------
    def retry(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              exc: BaseException | None = None, throw: bool = True,
              eta: datetime | None = None, countdown: float | None = None,
              max_retries: int | None = None, **options: Any) -> Retry:
        request = self.request
        retries = request.retries + 1
        limit = self.max_retries if max_retries is None else max_retries
        if request.called_directly:  # as Celery: nothing to re-publish, raise at once
            raise exc if exc is not None else Retry("Task can be retried", None)
        if eta is None and countdown is None:
            countdown = self.default_retry_delay
        if limit is not None and retries > limit:
            if exc is not None:
                raise exc
            shown_args = request.argsrepr or saferepr(tuple(request.args or ()))
            shown_kwargs = request.kwargsrepr or saferepr(dict(request.kwargs or {}))
            raise self.MaxRetriesExceededError(  # shown as argsrepr/kwargsrepr mask them
                f"Can't retry {self.name}[{request.id}] args:{shown_args} "
                f"kwargs:{shown_kwargs}", task_args=request.args, task_kwargs=request.kwargs)
        sig = retry_signature(self, request, args, kwargs, retries, eta, countdown, options)
        ret = Retry(exc=exc, when=eta or countdown, is_eager=bool(request.is_eager), sig=sig)
        if not request.is_eager:  # eager: apply() runs ret.sig itself, as in Celery
            store_retry(self, request, ret)
            try:
                sig.apply_async()
            except Exception as publish_error:  # as Celery; our worker dead-letters it
                raise Reject(publish_error, requeue=False) from publish_error
        if throw:
            raise ret
        return ret

    def autoretry_countdown(self) -> float | None:
        """Countdown for an automatic retry, honouring retry_backoff/jitter/max."""
        if not self.retry_backoff:
            return None
        factor = float(int(max(1.0, float(self.retry_backoff))))  # as Celery's autoretry
        return exponential_backoff(factor, self.request.retries, self.retry_backoff_max,
                                   full_jitter=self.retry_jitter)

    def update_state(self, task_id: str | None = None, state: str | None = None,
                     meta: Any = None, **kwargs: Any) -> None:
        request = self.request
        task_id = task_id or request.id
        if task_id is None:
            raise ValueError("update_state() needs a task id outside a task run")
        store_result(self.app, task_id, meta, state or states.PENDING, request=request, **kwargs)

    def set_progress(self, current: float, total: float, **extra: Any) -> None:
        """Store ``PROGRESS`` with meta ``{"current", "total", **extra}`` for the running
        request (soil's ``DownloadBase.set_progress``); read it as ``AsyncResult.progress``."""
        self.update_state(state="PROGRESS", meta={"current": current, "total": total,
                                                  **extra})

    def save_download(self, payload: bytes | str, **options: Any) -> Download:
        """Store this run's output file in the result store (see
        :func:`celeriac.results.downloads.save_download`); its download id is the task
        id unless ``download_id=`` says otherwise."""
        options.setdefault("download_id", self.request.id)
        options.setdefault("task_id", self.request.id)
        return save_download(result_store(self.app), payload, **options)

    def send_event(self, type_: str, retry: bool = True, retry_policy: Any = None,
                   **fields: Any) -> dict[str, Any] | None:
        """Publish a custom task event of the current request, as Celery does (with or
        without ``-E``); without a broadcast channel it is dropped with a warning."""
        hostname = self.request.hostname or client_hostname()
        dispatchers = self.app.__dict__.setdefault("_custom_event_dispatchers", {})
        if hostname not in dispatchers:
            dispatchers[hostname] = EventDispatcher(self.app, hostname=hostname)
        return dispatchers[hostname].send(type_, uuid=self.request.id, **fields)

    def replace(self, sig: Signature) -> None:
        """Replace this task with ``sig``: the caller's result becomes sig's result."""
        replace_task(self, sig)

    # -- hooks (override in subclasses) --------------------------------------------------
    def before_start(self, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Run before the task body."""

    def on_success(self, retval: Any, task_id: str, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> None:
        """Run after the task succeeded."""

    def on_failure(self, exc: BaseException, task_id: str, args: tuple[Any, ...],
                   kwargs: dict[str, Any], einfo: Any) -> None:
        """Run after the task failed."""

    def on_retry(self, exc: BaseException, task_id: str, args: tuple[Any, ...],
                 kwargs: dict[str, Any], einfo: Any) -> None:
        """Run when the task is retried."""

    def after_return(self, status: str, retval: Any, task_id: str, args: tuple[Any, ...],
                     kwargs: dict[str, Any], einfo: Any) -> None:
        """Run after the task returned, whatever the outcome."""

    def __repr__(self) -> str:
        return f"<@task: {self.name} of {self.app.main}>"

    @classmethod
    def has_result_hooks(cls) -> bool:
        """True when ``on_success``/``after_return`` are overridden: they run after the
        result is stored and may read it, so its write cannot be deferred."""
        return cls.on_success is not Task.on_success or cls.after_return is not Task.after_return

    # -- canvas shortcuts ---------------------------------------------------------------
    def map(self, it: Iterable[Any]) -> Any:
        return xmap(self.s(), it, app=self.app)

    def starmap(self, it: Iterable[Any]) -> Any:
        return xstarmap(self.s(), it, app=self.app)

    def chunks(self, it: Iterable[Any], n: int) -> Any:
        return chunks_signature(self.s(), it, n, app=self.app)


__all__ = ["Context", "Ignore", "Reject", "Retry", "Task"]
