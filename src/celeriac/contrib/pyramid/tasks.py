"""Websauna's task bases: ``RequestAwareTask`` and ``TransactionalTask``.

``@app.task(base=TransactionalTask)`` on ``def my_task(request, ...)``:

* **Calling** (``delay``/``apply_async``): a Pyramid request given as first
  argument (Websauna's ``apply_async(args=(request, id))``) is taken off the
  message: the worker gives the task its own. The call joins that request's
  transaction (see :mod:`.commit`): nothing is sent if it aborts, the message
  goes out after the commit. ``apply_async(..., on_commit=False)`` sends at once.
* **Running**: the body gets a fresh request (:mod:`.request`: registry,
  settings, ``tm``, ``dbsession``, URLs from ``app.url``) as first argument.
  ``TransactionalTask`` runs it inside one ``request.tm`` transaction: committed
  when the body returns, aborted when it raises or retries (so a failed task
  leaves no rows behind); tasks it sends leave only if that transaction commits.
  ``RequestAwareTask`` leaves transactions to the body.

``self.retry()`` always sends the retry at once (the task's transaction is
aborted). In eager mode (``task_always_eager``) the task runs at once in its own
request and transaction, as in the worker.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pyramid.interfaces import IRequest

from celeriac.app.task import Task

from .commit import caller_request, send_immediately
from .request import task_request

if TYPE_CHECKING:
    from celeriac.results.async_result import AsyncResult


def is_request(value: Any) -> bool:
    """True for a Pyramid request (anything providing ``IRequest``)."""
    return value is not None and IRequest.providedBy(value)


def registry_of(app: Any) -> Any:
    """The Pyramid registry bound to ``app`` (by ``--ini`` or ``config.include``)."""
    registry = app.conf.get("PYRAMID_REGISTRY")
    if registry is None:
        raise RuntimeError(
            f"{app!r} has no Pyramid registry: start the worker with --ini FILE, or call "
            f"config.include('celeriac.contrib.pyramid') in the application")
    return registry


class RequestAwareTask(Task):
    """A task whose first argument is a Pyramid request; no transaction lifecycle."""

    abstract = True
    #: publishes of this task wait for the current request's commit
    on_commit: bool | None = True
    #: run the body inside one ``request.tm`` transaction
    transactional = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        body = cls.__dict__.get("_orig_run")
        if body is not None and inspect.iscoroutinefunction(getattr(body, "__func__", body)):
            raise TypeError(f"{cls.__name__}: {RequestAwareTask.__name__} and "
                            f"{TransactionalTask.__name__} run sync functions (their request "
                            f"and transaction are thread-bound); make it a plain def")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.request_stack_empty() or (args and is_request(args[0])):
            return super().__call__(*args, **kwargs)  # called directly with a request
        with task_request(registry_of(self.app)) as request:
            if not self.transactional:
                return self.run(request, *args, **kwargs)
            request.environ["tm.active"] = True
            try:
                with request.tm:
                    return self.run(request, *args, **kwargs)
            finally:
                request.environ.pop("tm.active", None)

    def apply_async(self, args: Iterable[Any] | None = None,
                    kwargs: Mapping[str, Any] | None = None, task_id: str | None = None,
                    producer: Any = None, link: Any = None, link_error: Any = None,
                    shadow: str | None = None, **options: Any) -> AsyncResult:
        args = list(args or ())
        kwargs = dict(kwargs or {})
        caller = None
        if args and is_request(args[0]):
            caller = args.pop(0)
        elif is_request(kwargs.get("request")):
            caller = kwargs.pop("request")
        on_commit = options.pop("on_commit", None)
        with caller_request(caller):
            if on_commit is False:
                with send_immediately():
                    return super().apply_async(args, kwargs, task_id, producer, link,
                                               link_error, shadow, **options)
            return super().apply_async(args, kwargs, task_id, producer, link, link_error,
                                       shadow, **options)

    def _check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super()._check_arguments((None, *args), kwargs)  # the worker supplies the request

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        with send_immediately():  # the task's own transaction is about to abort
            return super().retry(*args, **kwargs)


class TransactionalTask(RequestAwareTask):
    """A request-aware task whose body runs in one transaction (commit, or abort on error)."""

    abstract = True
    transactional = True
