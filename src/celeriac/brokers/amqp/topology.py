"""What the AMQP broker declares on RabbitMQ: task queues, the delay layout, dead-letter queues.

**Task queues** are declared as Celery 5.7 declares them, so Celery workers
and clients share them without a ``PRECONDITION_FAILED``: a durable queue,
a durable direct exchange of the same name bound with the queue's name
(Celery's ``Queue(name, Exchange(name), routing_key=name)``), arguments
only when asked for: ``x-queue-type: quorum`` (option ``queue_type``, from
``task_default_queue_type``; per queue in ``queue_types``) and
``x-max-priority`` (option ``max_priority``, from
``task_queue_max_priority``; classic queues only). A queue that already
exists with other arguments is used as it is (a warning names the
difference) instead of failing. A queue listed in ``task_queues`` is declared
as kombu declares that ``Queue`` instead (:mod:`celeriac.brokers.declared`):
its exchange with its type, its binding with its routing key, its
``queue_arguments`` passed through as given.

**Delays** use kombu 5.5+'s native delayed delivery layout, so Celery and
celeriac share delayed messages (``tests/fixtures/amqp-task-properties.json``):
28 durable topic exchanges and quorum queues ``celery_delayed_27`` …
``celery_delayed_0``; level N holds a message 2^N s (``x-message-ttl``) and
dead-letters it to level N-1 (level 0: the topic exchange
``celery_delayed_delivery``). A message is published to ``celery_delayed_27``
with routing key = its delay in seconds as 28 dotted bits, then ``.`` and the
queue's routing key; exchange N routes ``*.`` (27-N times) ``1.#`` to its queue and
``*.`` (27-N times) ``0.#`` on to exchange N-1. Every consumed queue is bound to
``celery_delayed_delivery`` with ``#.<queue>``; the exchange of a fanout or topic
``task_queues`` entry is bound there as kombu binds it (:func:`bind_to_delays`), so a
delayed message goes where an immediate one goes. Consumers declare the layout when
they start (as Celery's worker does), producers before their first delayed message.
Resolution: the delay is rounded up to whole seconds for the bits, and the first level queue's hold
is shortened by the rounding through the message's ``expiration``, so a
message usually arrives within milliseconds of its time (it can wait behind
an older message of the same level: at most the rounding, < 1 s).
Maximum: 2^28 - 1 s (about 8.5 years).

**Dead letters** go to ``celeriac.dead.<queue>`` (durable classic queues,
published through the default exchange); ``celeriac.queue-catalog`` holds one
message per queue name ever declared (RabbitMQ has no way to list queues over
AMQP), compacted when read.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import amqp
from amqp import exceptions as amqp_errors

from ..declared import QueueSpec, exchange_route

logger = logging.getLogger("celeriac.brokers.amqp")

LEVELS = 28
MAX_DELAY = 2 ** LEVELS - 1
DELAY_ENTRY = f"celery_delayed_{LEVELS - 1}"
DELIVERY_EXCHANGE = "celery_delayed_delivery"
#: the first word of a keyless fanout exchange's delay key (see :func:`exchange_key`)
FANOUT_KEY = "celeriac-fanout"
CATALOG = "celeriac.queue-catalog"
DEAD_PREFIX = "celeriac.dead."


def level_name(level: int) -> str:
    return f"celery_delayed_{level}"


def dead_queue(queue: str) -> str:
    return f"{DEAD_PREFIX}{queue}"


def delay_route(seconds: float, routing_key: str) -> tuple[str, int | None]:
    """``(routing key, expiration ms or None)`` for a delay of ``seconds`` (> 0)."""
    whole = max(1, math.ceil(seconds))
    if whole > MAX_DELAY:
        raise ValueError(f"countdown/eta of {seconds:.0f} s is past RabbitMQ's delay layout "
                         f"maximum of {MAX_DELAY} s (about 8.5 years)")
    bits = format(whole, f"0{LEVELS}b")
    first_level = whole.bit_length() - 1
    shorten = whole - seconds  # the rounding, taken off the first level's hold
    expiration = None
    if shorten > 0.001:
        expiration = max(0, int((2 ** first_level - shorten) * 1000))
    return ".".join(bits) + "." + routing_key, expiration


def queue_arguments(queue: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``x-`` arguments a task queue is declared with (as Celery declares it)."""
    types = options.get("queue_types") or {}
    queue_type = str(types.get(queue) or options.get("queue_type")
                     or options.get("task_default_queue_type") or "classic")
    args: dict[str, Any] = {}
    if queue_type == "quorum":
        args["x-queue-type"] = "quorum"
    elif queue_type != "classic":
        raise ValueError(f"queue_type: {queue_type!r} is not 'classic' or 'quorum'")
    priorities = options.get("max_priorities") or {}
    max_priority = priorities.get(queue, options.get("max_priority",
                                                     options.get("task_queue_max_priority")))
    if max_priority is not None and queue_type == "classic":
        args["x-max-priority"] = int(max_priority)
    return args


def declare_task_queue(chan: amqp.Channel, queue: str, options: Mapping[str, Any],
                       spec: QueueSpec | None = None) -> bool:
    """Declare ``queue`` and its exchange and binding; False when it existed with other
    arguments (then ``chan`` is closed by the server and must be reopened)."""
    if spec is not None:
        return _declare_spec(chan, spec)
    args = queue_arguments(queue, options)
    try:
        chan.queue_declare(queue, durable=True, auto_delete=False, arguments=args or None)
    except amqp_errors.PreconditionFailed as exc:
        logger.warning("RabbitMQ queue %r exists with other arguments than %r; using it as it "
                       "is (%s)", queue, args, exc)
        return False
    chan.exchange_declare(queue, "direct", durable=True, auto_delete=False)
    chan.queue_bind(queue, queue, routing_key=queue)
    return True


def _declare_spec(chan: amqp.Channel, spec: QueueSpec) -> bool:
    """Declare a ``task_queues`` entry as kombu does: exchange, queue, binding."""
    try:
        chan.queue_declare(spec.name, durable=spec.durable, auto_delete=False,
                           arguments=dict(spec.arguments) or None)
    except amqp_errors.PreconditionFailed as exc:
        logger.warning("RabbitMQ queue %r exists with other arguments than %r; using it as it "
                       "is (%s)", spec.name, spec.arguments, exc)
        return False
    if spec.exchange:  # "": the default exchange, which binds every queue by its name
        chan.exchange_declare(spec.exchange, spec.exchange_type, durable=spec.exchange_durable,
                              auto_delete=False)
        chan.queue_bind(spec.name, spec.exchange, routing_key=spec.routing_key)
    return True


def bind_to_delays(chan: amqp.Channel, queue: str, spec: QueueSpec | None = None) -> None:
    """Let delayed messages for routing key ``queue`` reach ``queue``, and those for a
    ``task_queues`` entry's exchange reach it as kombu binds it: for a direct exchange
    the queue under its routing key; for a fanout, topic or headers exchange the
    exchange itself (``#.<routing key>``, or the key when it starts with ``#``) and the
    queue to its exchange under that key, so the exchange picks the queues as it does
    for an immediate message."""
    chan.exchange_declare(DELIVERY_EXCHANGE, "topic", durable=True, auto_delete=False)
    chan.queue_bind(queue, DELIVERY_EXCHANGE, routing_key=f"#.{queue}")
    if spec is None or not spec.exchange:
        return
    if spec.exchange_type == "direct":
        if spec.routing_key not in ("", queue):
            chan.queue_bind(queue, DELIVERY_EXCHANGE, routing_key=f"#.{spec.routing_key}")
        return
    key = exchange_key(spec)
    key = key if key.startswith("#") else f"#.{key}"
    chan.exchange_declare(spec.exchange, spec.exchange_type, durable=spec.exchange_durable,
                          auto_delete=False)
    chan.exchange_bind(spec.exchange, DELIVERY_EXCHANGE, routing_key=key)
    chan.queue_bind(queue, spec.exchange, routing_key=key)


def delayed_key(specs: Mapping[str, QueueSpec], delivery_info: Any, queue: str) -> str:
    """The routing key (after the delay bits) of a new delayed message for ``queue``:
    where :func:`bind_to_delays` sends it is where an immediate one goes. Through an
    exchange (:func:`..declared.exchange_route`): the route's key (a fanout: the key
    of a queue bound to it, any reaches the exchange); else the queue's name."""
    route = exchange_route(specs, delivery_info, queue)
    if route is None:
        return queue
    exchange, key = route
    bound = [s for s in specs.values() if s.exchange == exchange]
    if bound and bound[0].exchange_type == "fanout":
        return exchange_key(bound[0])
    if not isinstance(delivery_info, Mapping) or delivery_info.get("exchange") != exchange:
        return specs[queue].routing_key  # the listed queue's own key, as kombu sends it
    return key


def exchange_key(spec: QueueSpec) -> str:
    """The key that binds a non-direct exchange to ``celery_delayed_delivery`` (after
    ``#.``): kombu's, the queue's routing key; for a fanout queue without one of its own
    (``routing_key`` defaults to the queue's name) ``celeriac-fanout.<exchange>``, so
    the queue's ``#.<queue>`` binding, which takes back its own delayed give-backs, and
    other fanouts never match it."""
    if spec.exchange_type == "fanout" and spec.routing_key in ("", spec.name):
        return f"{FANOUT_KEY}.{spec.exchange}"
    return spec.routing_key


def declare_delay_layout(chan: amqp.Channel, queue_type: str = "quorum") -> None:
    """Declare kombu's 28 delay levels and ``celery_delayed_delivery`` (idempotent).

    Every declaration is sent without waiting for its reply; the last one waits,
    and RabbitMQ answers it only after all the others (one channel is ordered),
    so a refused one still raises here.
    """
    routing_key = "1.#"
    for level in range(LEVELS - 1, -1, -1):
        name = level_name(level)
        chan.exchange_declare(name, "topic", durable=True, auto_delete=False, nowait=True)
        args: dict[str, Any] = {
            "x-queue-type": queue_type,
            "x-overflow": "reject-publish",
            "x-message-ttl": 2 ** level * 1000,
            "x-dead-letter-exchange": level_name(level - 1) if level else DELIVERY_EXCHANGE,
        }
        if queue_type == "quorum":
            args["x-dead-letter-strategy"] = "at-least-once"
        chan.queue_declare(name, durable=True, auto_delete=False, arguments=args, nowait=True)
        chan.queue_bind(name, name, routing_key=routing_key, nowait=True)
        routing_key = "*." + routing_key
    chan.exchange_declare(DELIVERY_EXCHANGE, "topic", durable=True, auto_delete=False,
                          nowait=True)
    routing_key = "0.#"
    for level in range(LEVELS - 1, 0, -1):
        chan.exchange_bind(level_name(level - 1), level_name(level), routing_key=routing_key,
                           nowait=True)
        routing_key = "*." + routing_key
    chan.exchange_bind(DELIVERY_EXCHANGE, level_name(0), routing_key=routing_key)


def declare_dead_queue(chan: amqp.Channel, queue: str) -> str:
    name = dead_queue(queue)
    chan.queue_declare(name, durable=True, auto_delete=False)
    return name


def declare_catalog(chan: amqp.Channel) -> None:
    chan.queue_declare(CATALOG, durable=True, auto_delete=False)


def count(chan: amqp.Channel, queue: str) -> tuple[int, int] | None:
    """``(ready messages, consumers)`` of ``queue``; None when it does not exist (the
    channel is then closed by the server)."""
    try:
        _, messages, consumers = chan.queue_declare(queue, passive=True)
    except amqp_errors.NotFound:
        return None
    return int(messages), int(consumers)
