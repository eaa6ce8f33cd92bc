"""Publishing task messages: options to headers, routing, publish retry, signals.

:func:`send_task` is the one path every producer call takes (``delay``,
``apply_async``, ``send_task``, signatures, retries, beat): it resolves the
queue, ETA and expiry, builds the protocol v2 message and hands it to the
broker with ``not_before`` so delays wait in the broker. Publishing either
succeeds or raises :class:`~celeriac.exceptions.OperationalError` after the
call's ``retry``/``retry_policy`` (``task_publish_retry``,
``task_publish_retry_policy``) and, at the latest, ``broker_publish_timeout``
seconds (:func:`publish_items`).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any

from .. import clock, hooks, signals
from ..brokers.base import Publish, redact
from ..brokers.declared import EXCHANGE_SCHEMES, declares_exchange
from ..brokers.registry import scheme_of
from ..canvas.signature import Signature
from ..config.settings import seconds
from ..events.dispatcher import send_task_sent
from ..exceptions import EncodeError, OperationalError
from ..message_size import check_size
from ..messages import (
    Message,
    decode_body,
    task_message,
    to_timestamp,
    uuid4_text,
)
from ..results.async_result import AsyncResult
from ..retry import RetryPolicy, failing
from ..retry import call as retry_call
from ..security.setup import security_of
from ..serialization import dumps
from . import state as _state
from .routing import route

if TYPE_CHECKING:
    from .base import Celery

logger = logging.getLogger("celeriac.publish")

#: what a broker raises when a publish may succeed if tried again
PUBLISH_ERRORS: tuple[type[BaseException], ...] = (OperationalError, OSError, ConnectionError)


#: Celery's publishing options (kombu's producer and AMQP flags) celeriac has no use for:
#: each is reported once per app when a call passes it, with what to use instead.
IGNORED_OPTIONS = {
    "producer": "celeriac publishes through the app's broker (apply_async(connection=) "
                "takes a database connection)",
    "publisher": "celeriac publishes through the app's broker",
    "router": "routes come from task_routes and the call's queue=",
    "route_name": "routes come from task_routes and the call's queue=",
    "declare": "celeriac declares the queues of task_queues itself",
    "exchange_type": "celeriac routes by queue (exchanges: task_queues on RabbitMQ)",
    "delivery_mode": "celeriac's messages are always persistent",
    "mandatory": "celeriac publishes to a queue it declared",
    "immediate": "RabbitMQ 3 removed it",
    "timeout": "the publish deadline is broker_publish_timeout",
    "confirm_timeout": "the publish deadline is broker_publish_timeout",
}


#: the publishing options celeriac reads (a near miss of one is reported as a typo)
KNOWN_OPTIONS = frozenset((
    "task_id", "connection", "task", "queue", "priority", "expires", "time_limit",
    "soft_time_limit", "serializer", "compression", "routing_key", "exchange",
    "ignore_result", "countdown", "eta", "retries", "group_id", "group_index", "root_id",
    "parent_id", "argsrepr", "kwargsrepr", "shadow", "link", "link_error", "chain", "chord",
    "headers", "reply_to", "replaced_task_nesting", "stamped_headers", "stamps", "retry",
    "retry_policy", "add_to_parent", "result_cls", *IGNORED_OPTIONS))


def report_ignored(app: Celery, name: str, options: Mapping[str, Any]) -> None:
    """Report the options of one call that do nothing: Celery's kombu-level ones, and a
    near miss of a known one (``countdwon=``), once per app and name."""
    for option in IGNORED_OPTIONS.keys() & options.keys():
        if options[option] is not None:
            app.conf.report(f"apply_async({option}=)", f"apply_async({option}=...) (task "
                            f"{name}) has no effect in celeriac: {IGNORED_OPTIONS[option]}")
    for option in options.keys() - KNOWN_OPTIONS:
        close = difflib.get_close_matches(option, KNOWN_OPTIONS, n=1, cutoff=0.8)
        if close:
            app.conf.report(f"apply_async({option}=)", f"apply_async option {option!r} (task "
                            f"{name}) is unknown and ignored (did you mean {close[0]!r}?)")


def _aware(value: datetime, tz: tzinfo | None) -> datetime:
    """A naive datetime is read in the app's time zone (UTC by default), as Celery does."""
    return value if value.tzinfo else value.replace(tzinfo=tz or timezone.utc)


def resolve_eta(countdown: float | None, eta: datetime | str | None,
                tz: tzinfo | None = None) -> datetime | None:
    if countdown:  # as Celery: countdown=0 means "now", with no eta header
        return clock.now() + timedelta(seconds=float(countdown))
    if isinstance(eta, str):
        eta = datetime.fromisoformat(eta)
    return _aware(eta, tz) if eta is not None else None


def resolve_expires(expires: Any, tz: tzinfo | None = None) -> datetime | None:
    if expires is None:
        return None
    if isinstance(expires, (int, float, timedelta)):
        return clock.now() + timedelta(seconds=seconds(expires) or 0)
    if isinstance(expires, str):
        expires = datetime.fromisoformat(expires)
    return _aware(expires, tz)


def _sig_list(value: Any) -> list[dict[str, Any]] | None:
    if not value:
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    return [dict(s) if isinstance(s, Signature) else s for s in items]


def task_defaults(task: Any, options: dict[str, Any]) -> dict[str, Any]:
    if task is None:
        return options
    for attr in ("queue", "priority", "expires", "time_limit", "soft_time_limit",
                 "serializer", "compression", "routing_key", "exchange"):
        if options.get(attr) is None and getattr(task, attr, None) is not None:
            options[attr] = getattr(task, attr)
    if options.get("ignore_result") is None and task.ignore_result:
        options["ignore_result"] = True
    return options


def build_message(app: Celery, name: str, args: Any, kwargs: Any, task_id: str,
                  options: dict[str, Any]) -> tuple[Message, str, float | None, int | None]:
    """Return ``(message, queue, not_before, priority)`` for one task call."""
    conf = app.conf
    security_of(app)  # task_serializer='auth': the keys are loaded before the first message
    parent = _state.get_current_worker_task()
    preq = parent.request if parent is not None else None
    routed = route(conf, name, args, kwargs, options, options.get("task"))
    queue = routed["queue"]
    exchange = getattr(routed.get("exchange"), "name", routed.get("exchange"))
    on_rabbitmq = scheme_of(app.broker_url or "") in EXCHANGE_SCHEMES
    if exchange and not on_rabbitmq:
        conf.report("exchange", f"exchange={exchange!r} (task {name}) is ignored: celeriac "
                    "routes by queue name (queue=, routing_key=, task_routes) except on "
                    "RabbitMQ, as Celery does on Redis with its default exchange")
    priority = routed.get("priority")
    if priority is None:
        priority = conf.task_default_priority
    if priority is None and preq is not None and conf.task_inherit_parent_priority:
        priority = (preq.delivery_info or {}).get("priority")
    tz = app.timezone
    eta = resolve_eta(options.get("countdown"), options.get("eta"), tz)
    expires = resolve_expires(options.get("expires"), tz)
    try:
        message = _message(app, name, args, kwargs, task_id, options, eta, expires, priority,
                           queue, preq)
    except TypeError as exc:
        serializer = options.get("serializer") or conf.task_serializer
        raise EncodeError(f"{name}: {_culprit(args, kwargs, serializer)} cannot be sent with "
                        f"the {serializer!r} serializer ({exc}); task arguments must be plain "
                        f"values such as ids, not live objects") from None
    if exchange and on_rabbitmq:  # RabbitMQ publishes to it when task_queues declares it
        if not declares_exchange(conf.task_queues, str(exchange)):
            conf.report("exchange", f"exchange={exchange!r} (task {name}) is not declared in "
                        f"task_queues: the message goes to queue {queue!r} by its name")
        message.properties["delivery_info"] = {
            "exchange": str(exchange), "routing_key": str(routed.get("routing_key") or queue)}
    return message, queue, to_timestamp(eta), priority


def _culprit(args: Any, kwargs: Any, serializer: str) -> str:
    """Which argument a serializer refused, e.g. ``args[0] (pyramid.request.Request)``."""
    for where, value in [*((f"args[{i}]", v) for i, v in enumerate(args)),
                         *((f"kwargs[{k!r}]", v) for k, v in kwargs.items())]:
        try:
            dumps(value, serializer)
        except Exception:
            return f"{where} ({type(value).__module__}.{type(value).__qualname__})"
    return "an option"


def _message(app: Celery, name: str, args: Any, kwargs: Any, task_id: str,
             options: dict[str, Any], eta: datetime | None, expires: datetime | None,
             priority: int | None, queue: str, preq: Any) -> Message:
    conf = app.conf
    return task_message(
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
        headers=options.get("headers"), priority=priority,
        reply_to=options.get("reply_to") or app.thread_oid,
        queue=queue, serializer=options.get("serializer") or conf.task_serializer,
        replaced_task_nesting=int(options.get("replaced_task_nesting") or 0),
        stamped_headers=options.get("stamped_headers"), stamps=options.get("stamps"),
        compression=options.get("compression") or conf.task_compression,
    )


def _chord(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    return dict(value)


def send_task(app: Celery, name: str, args: Any = None, kwargs: Any = None,
              **options: Any) -> str:
    """Publish a task call; return its task id."""
    task_id = options.pop("task_id", None) or uuid4_text()
    connection = options.pop("connection", None)
    report_ignored(app, name, options)
    options = task_defaults(options.get("task"), options)
    message, queue, not_before, priority = build_message(
        app, name, list(args or ()), dict(kwargs or {}), task_id, options)
    listened = signals.before_task_publish._receivers or signals.after_task_publish._receivers
    body = _signal_body(message) if listened else None
    if listened:  # receivers may add headers (tracing does): the message carries the same dict
        signals.before_task_publish.send(sender=name, body=body, exchange="",
                                         routing_key=queue, headers=message.headers,
                                         properties=message.properties, declare=[],
                                         retry_policy=options.get("retry_policy"))
    publish_items(app, [Publish(message, queue, not_before, priority)],
                  retry=options.get("retry"), policy=options.get("retry_policy"),
                  connection=connection)
    if listened:
        signals.after_task_publish.send(sender=name, body=body, exchange="",
                                        routing_key=queue, headers=message.headers)
    if options.get("add_to_parent", True):  # Celery's: False keeps it out of children
        add_to_parent(AsyncResult(task_id, app=app, task_name=name))
    return task_id


def add_to_parent(result: Any) -> None:
    """Celery's ``add_trail``: a result sent by a running task joins its ``children``."""
    parent = _state.get_current_worker_task()
    if parent is not None and parent.trail:
        parent.request.children.append(result)


def _signal_body(message: Message) -> Any:
    """Celery's publish signals get the body as ``(args, kwargs, embed)``; decoded only
    when someone listens."""
    if not (signals.before_task_publish.receivers or signals.after_task_publish.receivers):
        return None
    args, kwargs, embed = decode_body(message)
    return (args, kwargs, embed)


def publish_policy(app: Celery, retry: bool | None = None,
                   policy: Mapping[str, Any] | None = None) -> RetryPolicy:
    """The retry policy of one publish: ``task_publish_retry_policy`` updated by the call's
    ``retry_policy``, no retries when ``retry`` (default ``task_publish_retry``) is false,
    and always the ``broker_publish_timeout`` deadline."""
    conf = app.conf
    if retry is None:
        retry = conf.task_publish_retry
    key = (conf.task_publish_retry_policy, policy, conf.broker_publish_timeout, bool(retry))
    cached = app.__dict__.get("_publish_policy")
    if cached is not None and cached[0] == key:  # equal settings: the same policy
        return cached[1]
    rules = RetryPolicy.from_celery({**(key[0] or {}), **(policy or {})},
                                    timeout=seconds(key[2]))
    rules = rules if retry else rules.once()
    app.__dict__["_publish_policy"] = (_frozen_copy(key), rules)
    return rules


def _frozen_copy(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """``key`` with its policy dicts copied, so a later change in place is not missed."""
    return tuple(dict(part) if isinstance(part, Mapping) else part for part in key)


def warn_retry(queue: str, exc: BaseException, pause: float, retries: list[int]) -> None:
    """Log a publish retry: the first is often a pooled socket a restarted server closed
    (not worth a warning), and during a reported outage the outage line says it all."""
    retries[0] += 1
    logger.log(logging.WARNING if retries[0] > 1 and not failing() else logging.DEBUG,
               "Publish to %s failed (%s); retrying in %.1fs", queue, exc, pause)


def publish_items(app: Celery, items: list[Publish], *, retry: bool | None = None,
                  policy: Mapping[str, Any] | None = None, intercept: bool = True,
                  connection: Any = None) -> None:
    """Publish ``items`` (one message or a batch) durably, or raise OperationalError.

    The one retry layer of publishing (:func:`celeriac.retry.call`): brokers
    try once inside it, and give up at the publish deadline even when the
    server accepts connections but never answers. First, unless ``intercept``
    is false or a ``connection`` is given, the publish interceptors
    (:mod:`celeriac.hooks`) may take the batch (the Django outbox writes it to
    its table inside the transaction). With ``connection``
    (``apply_async(connection=conn)``) the items are inserted through the
    caller's open database transaction (:meth:`Broker.publish_in_transaction`):
    one attempt, since a failed statement aborts that transaction; the broker's
    own round trips (schema check, queue names) still end by the deadline.
    With ``security_seal`` each message is sealed first (:mod:`celeriac.security.seal`);
    a message over ``task_message_max_size`` raises MessageTooLarge (nothing published).
    """
    security = security_of(app)
    if security is not None and security.sealer is not None:  # security_seal
        sealer = security.sealer
        items = [replace(item, message=sealer.seal(item.message)) for item in items]
    limit = app.conf.task_message_max_size
    if limit:
        for item in items:  # refused before anything is stored (MessageTooLarge)
            check_size(item.message, limit, exact=False)
    if (connection is None and intercept and hooks._interceptors
            and hooks.intercept_publish(app, items)):
        return  # taken by an integration (e.g. written to a transactional outbox)
    backend = app.backend
    if backend is not None:
        backend.on_publish()  # rpc://: the reply queue exists before a result can be sent
    broker = app.broker
    rules = publish_policy(app, retry, policy)
    first = items[0].message
    what = (f"publish of {first.task_name}[{first.task_id}]" if len(items) == 1
            else f"publish of {len(items)} messages")
    if connection is not None:
        rules = rules.once()
        what += " in the caller's transaction"

    def attempt() -> None:
        if connection is not None:
            broker.publish_in_transaction(connection, items)
        elif len(items) == 1:
            item = items[0]
            broker.publish(item.message, item.queue, not_before=item.not_before,
                           priority=item.priority)
        else:
            broker.publish_many(items)

    retries = [0]
    retry_call(attempt, rules, retry_on=PUBLISH_ERRORS, what=what,
               where=f"broker {redact(broker.url)}",
               on_retry=lambda exc, pause: warn_retry(items[0].queue, exc, pause, retries))
    if app.conf.task_send_sent_event:
        send_task_sent(app, items)
