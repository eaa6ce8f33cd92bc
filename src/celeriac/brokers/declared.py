"""``task_queues``: the exchanges, bindings and arguments each declared queue asks for.

Only the RabbitMQ broker (:mod:`.amqp`) honours exchanges, routing keys and
queue arguments; on the other brokers a queue is its name, and the app warns
once naming what of ``task_queues`` has no effect there
(:func:`no_effect_elsewhere`).

Celery's ``task_queues`` is a list of kombu ``Queue`` objects (or dicts of the
same keys, as Celery's ``Queues`` accepts). celeriac does not import kombu: it
reads the attributes ``name``, ``exchange`` (``.name``, ``.type``),
``routing_key``, ``queue_arguments``, ``durable`` and ``max_priority``, and
declares what kombu declares for that queue, so a Celery 5.7 worker or client
using the same ``task_queues`` finds the queue, its exchange and its binding
as it expects (no ``PRECONDITION_FAILED`` either way). A message routed to
such a queue is published as Celery publishes it: through the default
exchange with the queue's name when its exchange is direct, else to its
exchange (topic, fanout, headers) with its routing key; a fanout exchange
therefore reaches every queue bound to it.

A queue declared with ``x-dead-letter-exchange`` in its arguments has a
dead-letter exchange of its user's: ``Reject(requeue=False)`` and every other
dead-lettering of its messages go through RabbitMQ (``basic.reject`` with
``requeue=False`` on the live channel, so RabbitMQ adds its ``x-death``
header), not into celeriac's ``celeriac.dead.<queue>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: URL schemes of the broker that honours exchanges (:class:`~.amqp.broker.AMQPBroker`)
EXCHANGE_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})
EXCHANGE_TYPES = frozenset({"direct", "topic", "fanout", "headers"})
DLX = "x-dead-letter-exchange"
DLX_ROUTING_KEY = "x-dead-letter-routing-key"


@dataclass(frozen=True)
class QueueSpec:
    """One ``task_queues`` entry as RabbitMQ sees it."""

    name: str
    exchange: str
    exchange_type: str = "direct"
    routing_key: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    durable: bool = True
    exchange_durable: bool = True

    @property
    def dead_letter_exchange(self) -> str | None:
        value = self.arguments.get(DLX)
        return None if value is None else str(value)

    @property
    def dead_letter_routing_key(self) -> str:
        return str(self.arguments.get(DLX_ROUTING_KEY) or self.routing_key or self.name)

    @property
    def default_layout(self) -> bool:
        """Declared as celeriac declares a queue anyway: no exchange semantics of its own."""
        return (self.exchange in ("", self.name) and self.exchange_type == "direct"
                and self.routing_key in ("", self.name) and not self.arguments)


def _get(entry: Any, key: str, default: Any = None) -> Any:
    if isinstance(entry, Mapping):
        return entry.get(key, default)
    return getattr(entry, key, default)


def queue_spec(entry: Any) -> QueueSpec:
    """A :class:`QueueSpec` from a kombu-like ``Queue`` or a dict of the same keys."""
    name = _get(entry, "name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"task_queues: {entry!r} has no queue name")
    exchange = _get(entry, "exchange")
    exchange_type = _get(entry, "exchange_type")
    exchange_durable = True
    if exchange is None:
        exchange_name = name  # kombu: Queue(name) gets Exchange(name)
    elif isinstance(exchange, str):
        exchange_name = exchange
    else:
        exchange_name = str(_get(exchange, "name") or "")
        exchange_type = exchange_type or _get(exchange, "type")
        exchange_durable = bool(_get(exchange, "durable", True))
    exchange_type = str(exchange_type or "direct")
    if exchange_type not in EXCHANGE_TYPES:
        raise ValueError(f"task_queues: queue {name!r} has exchange type {exchange_type!r}, "
                         f"not one of {sorted(EXCHANGE_TYPES)}")
    routing_key = _get(entry, "routing_key") or _get(entry, "binding_key")  # Celery's old key
    if routing_key is None:
        routing_key = name
    arguments = dict(_get(entry, "queue_arguments") or {})
    max_priority = _get(entry, "max_priority")
    if max_priority is not None:
        arguments.setdefault("x-max-priority", int(max_priority))
    durable = _get(entry, "durable")
    return QueueSpec(name, exchange_name, exchange_type, str(routing_key), arguments,
                     True if durable is None else bool(durable), exchange_durable)


def queue_specs(value: Any, max_priority: Any = None) -> dict[str, QueueSpec]:
    """``task_queues`` (a list, tuple or name → queue dict) keyed by queue name;
    ``max_priority`` (``task_queue_max_priority``) is added as ``x-max-priority`` to every
    queue without one, as Celery adds it."""
    if not value:
        return {}
    if isinstance(value, Mapping) and not {"name", "exchange"} & set(value):
        entries = [dict(v, name=k) if isinstance(v, Mapping) else v for k, v in value.items()]
    elif isinstance(value, (list, tuple, set, frozenset)):
        entries = list(value)
    else:
        entries = [value]
    specs = [queue_spec(e) for e in entries]
    if max_priority is not None:
        for spec in specs:
            spec.arguments.setdefault("x-max-priority", int(max_priority))
    return {s.name: s for s in specs}


def exchange_route(specs: Mapping[str, QueueSpec], delivery_info: Any,
                   queue: str) -> tuple[str, str] | None:
    """``(exchange, routing key)`` a new message for ``queue`` is published with, by
    Celery's rule: a route's exchange (``delivery_info``) when ``task_queues`` declares
    it; else, for a listed queue whose exchange is not direct, its exchange and routing
    key; None: straight to ``queue`` through the default exchange (a direct exchange's
    queue too, as Celery sends it)."""
    if isinstance(delivery_info, Mapping) and delivery_info.get("exchange"):
        exchange = str(delivery_info["exchange"])
        if any(s.exchange == exchange for s in specs.values()):
            return exchange, str(delivery_info.get("routing_key") or queue)
    spec = specs.get(queue)
    if spec is None or spec.exchange_type == "direct":  # Celery: direct → anonymous exchange
        return None
    return spec.exchange, spec.routing_key or queue


def declares_exchange(task_queues: Any, exchange: str) -> bool:
    """Whether a ``task_queues`` entry declares ``exchange`` (a route may publish to it)."""
    return any(s.exchange == exchange for s in queue_specs(task_queues).values())


def to_declare(specs: Mapping[str, QueueSpec], message: Any, queue: str,
               extra: Any) -> list[str]:
    """The queues to declare before publishing ``message`` for ``queue``: every
    ``task_queues`` entry bound to the exchange a route names (kombu publishes to the
    exchange; ``queue`` is then only its routing key), else ``queue``."""
    info = message.properties.get("delivery_info")
    if extra is None and queue not in specs and isinstance(info, Mapping):
        bound = [s.name for s in specs.values() if s.exchange and s.exchange == info.get(
            "exchange")]
        if bound:
            return bound
    return [queue]


def no_effect_elsewhere(broker: Any, value: Any) -> str | None:
    """A warning naming what of ``task_queues`` ``broker`` cannot honour (None: nothing)."""
    if not value or getattr(broker, "declares_exchanges", False):
        return None
    lost = []
    for spec in queue_specs(value).values():
        if spec.default_layout:
            continue
        parts = []
        if spec.exchange not in ("", spec.name) or spec.exchange_type != "direct":
            parts.append(f"exchange {spec.exchange!r} ({spec.exchange_type})")
        if spec.routing_key not in ("", spec.name):
            parts.append(f"routing_key {spec.routing_key!r}")
        if spec.arguments:
            parts.append(f"queue_arguments {sorted(spec.arguments)}")
        lost.append(f"queue {spec.name!r}: " + ", ".join(parts))
    if not lost:
        return None
    return (f"task_queues: {'; '.join(lost)}: no effect on {type(broker).__name__} "
            "(exchanges, routing keys and queue arguments are RabbitMQ's); messages go to "
            "the queue named by the route, as Celery does with its default exchange")
