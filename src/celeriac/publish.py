"""Publishing task messages: options to headers, routing, publish retry, signals.

:func:`send_task` is the one path every producer call takes (``delay``,
``apply_async``, ``send_task``, signatures, retries, beat): it resolves the
queue, ETA and expiry, builds the protocol v2 message and hands it to the
broker with ``not_before`` so delays wait in the broker. Publishing either
succeeds or raises :class:`~celeriac.exceptions.OperationalError` after the
bounded ``task_publish_retry_policy``.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any

from . import _state, signals
from .brokers.base import Publish
from .canvas import Signature
from .config import seconds
from .exceptions import OperationalError
from .messages import Message, decode_body, task_message, to_timestamp
from .routing import route

if TYPE_CHECKING:
    from .app import Celery

logger = logging.getLogger("celeriac.publish")


def _aware(value: datetime, tz: tzinfo | None) -> datetime:
    """A naive datetime is read in the app's time zone (UTC by default), as Celery does."""
    return value if value.tzinfo else value.replace(tzinfo=tz or timezone.utc)


def resolve_eta(countdown: float | None, eta: datetime | str | None,
                tz: tzinfo | None = None) -> datetime | None:
    if countdown:  # as Celery: countdown=0 means "now", with no eta header
        return datetime.now(timezone.utc) + timedelta(seconds=float(countdown))
    if isinstance(eta, str):
        eta = datetime.fromisoformat(eta)
    return _aware(eta, tz) if eta is not None else None


def resolve_expires(expires: Any, tz: tzinfo | None = None) -> datetime | None:
    if expires is None:
        return None
    if isinstance(expires, (int, float, timedelta)):
        return datetime.now(timezone.utc) + timedelta(seconds=seconds(expires) or 0)
    if isinstance(expires, str):
        expires = datetime.fromisoformat(expires)
    return _aware(expires, tz)


def _sig_list(value: Any) -> list[dict[str, Any]] | None:
    if not value:
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    return [dict(s) if isinstance(s, Signature) else s for s in items]


def _task_defaults(task: Any, options: dict[str, Any]) -> dict[str, Any]:
    if task is None:
        return options
    for attr in ("queue", "priority", "expires", "time_limit", "soft_time_limit",
                 "serializer", "compression"):
        if options.get(attr) is None and getattr(task, attr, None) is not None:
            options[attr] = getattr(task, attr)
    if options.get("ignore_result") is None and task.ignore_result:
        options["ignore_result"] = True
    return options


def build_message(app: Celery, name: str, args: Any, kwargs: Any, task_id: str,
                  options: dict[str, Any]) -> tuple[Message, str, float | None, int | None]:
    """Return ``(message, queue, not_before, priority)`` for one task call."""
    conf = app.conf
    parent = _state.get_current_worker_task()
    preq = parent.request if parent is not None else None
    routed = route(conf, name, args, kwargs, options, options.get("task"))
    queue = routed["queue"]
    priority = routed.get("priority")
    if priority is None:
        priority = conf.task_default_priority
    if priority is None and preq is not None and conf.task_inherit_parent_priority:
        priority = (preq.delivery_info or {}).get("priority")
    tz = app.timezone
    eta = resolve_eta(options.get("countdown"), options.get("eta"), tz)
    expires = resolve_expires(options.get("expires"), tz)
    message = task_message(
        name, task_id, args, kwargs, eta=eta, expires=expires,
        retries=int(options.get("retries") or 0), group_id=options.get("group_id"),
        group_index=options.get("group_index"),
        time_limit=options.get("time_limit"), soft_time_limit=options.get("soft_time_limit"),
        root_id=options.get("root_id") or (preq.root_id if preq else None),
        parent_id=options.get("parent_id") or (preq.id if preq else None),
        argsrepr=options.get("argsrepr"), kwargsrepr=options.get("kwargsrepr"),
        shadow=options.get("shadow"), ignore_result=bool(options.get("ignore_result")),
        callbacks=_sig_list(options.get("link")), errbacks=_sig_list(options.get("link_error")),
        chain=_sig_list(options.get("chain")), chord=_chord(options.get("chord")),
        headers=options.get("headers"), priority=priority, reply_to=app.thread_oid,
        queue=queue, serializer=options.get("serializer") or conf.task_serializer,
        replaced_task_nesting=int(options.get("replaced_task_nesting") or 0),
        stamped_headers=options.get("stamped_headers"), stamps=options.get("stamps"),
        compression=options.get("compression") or conf.task_compression,
    )
    return message, queue, to_timestamp(eta), priority


def _chord(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    return dict(value)


def send_task(app: Celery, name: str, args: Any = None, kwargs: Any = None,
              **options: Any) -> str:
    """Publish a task call; return its task id."""
    task_id = options.pop("task_id", None) or str(uuid.uuid4())
    connection = options.pop("connection", None)
    options = _task_defaults(options.get("task"), options)
    message, queue, not_before, priority = build_message(
        app, name, list(args or ()), dict(kwargs or {}), task_id, options)
    body = _signal_body(message)
    # receivers may add headers (tracing does): the message carries the same dict
    signals.before_task_publish.send(sender=name, body=body, exchange="",
                                     routing_key=queue, headers=message.headers,
                                     properties=message.properties, declare=[],
                                     retry_policy=options.get("retry_policy"))
    if connection is not None:  # inside the caller's transaction: no retry loop
        app.broker.publish_in_transaction(connection, [Publish(message, queue, not_before,
                                                               priority)])
    else:
        publish_with_retry(app, message, queue, not_before, priority,
                           retry=options.get("retry", app.conf.task_publish_retry),
                           policy=options.get("retry_policy"))
    signals.after_task_publish.send(sender=name, body=body, exchange="",
                                    routing_key=queue, headers=message.headers)
    return task_id


def _signal_body(message: Message) -> Any:
    """Celery's publish signals get the body as ``(args, kwargs, embed)``; decoded only
    when someone listens."""
    if not (signals.before_task_publish.receivers or signals.after_task_publish.receivers):
        return None
    args, kwargs, embed = decode_body(message)
    return (args, kwargs, embed)


def publish_with_retry(app: Celery, message: Message, queue: str, not_before: float | None,
                       priority: int | None, *, retry: bool = True,
                       policy: dict[str, Any] | None = None) -> None:
    policy = {**app.conf.task_publish_retry_policy, **(policy or {})}
    broker_retries = type(app.broker).retries_connection
    attempts = 1 + (int(policy.get("max_retries", 3)) if retry and not broker_retries else 0)
    delay = float(policy.get("interval_start", 0))
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            app.broker.publish(message, queue, not_before=not_before, priority=priority)
            return
        except (OperationalError, OSError, ConnectionError) as exc:
            last = exc
            if attempt + 1 < attempts:
                logger.warning("Publish to %s failed (%s); retrying in %.1fs", queue, exc, delay)
                time.sleep(delay)
                delay = min(delay + float(policy.get("interval_step", 0.2)),
                            float(policy.get("interval_max", 1)))
    raise OperationalError(
        f"could not publish {message.task_name}[{message.task_id}] to {app.broker.url}: {last}"
    ) from last
