"""``task_queues`` read as Celery 5.7 reads it (:mod:`celeriac.brokers.declared`): the same
exchange, type, routing key and queue arguments as Celery's own ``app.amqp.queues`` for
kombu ``Queue`` objects and the ``{name: options}`` dict form, ``task_queue_max_priority``
added where a queue has none; and what of it only RabbitMQ honours."""

from __future__ import annotations

from typing import Any

import pytest

from celeriac.brokers.declared import exchange_route, no_effect_elsewhere, queue_specs

celery = pytest.importorskip("celery")
kombu = pytest.importorskip("kombu")


def celery_view(task_queues: Any, max_priority: int | None) -> dict[str, tuple[Any, ...]]:
    app = celery.Celery("declared", broker="amqp://")
    app.conf.task_queues = task_queues
    app.conf.task_queue_max_priority = max_priority
    return {q.name: (q.exchange.name, q.exchange.type, q.routing_key,
                     dict(q.queue_arguments or {})) for q in app.amqp.queues.values()}


@pytest.mark.parametrize("max_priority", [None, 7])
def test_queues_are_read_as_celery_reads_them(max_priority: int | None) -> None:
    Exchange, Queue = kombu.Exchange, kombu.Queue
    objects = [Queue("t", Exchange("tx", type="topic"), routing_key="a.#",
                     queue_arguments={"x-queue-type": "quorum"}),
               Queue("f", Exchange("fx", type="fanout")),
               Queue("p", Exchange("px"), routing_key="p", max_priority=3),
               Queue("w", Exchange("w"), routing_key="w",
                     queue_arguments={"x-dead-letter-exchange": "dlx", "x-message-ttl": 5})]
    dicts = {"d": {"exchange": "dx", "exchange_type": "fanout"},
             "b": {"exchange": "bx", "binding_key": "b.key"}}
    for task_queues in (objects, dicts):
        ours = {s.name: (s.exchange, s.exchange_type, s.routing_key, s.arguments)
                for s in queue_specs(task_queues, max_priority).values()}
        expected = celery_view(task_queues, max_priority)
        if task_queues is objects:  # kombu keeps max_priority apart from queue_arguments
            name, kind, key, args = expected["p"]
            expected["p"] = (name, kind, key, {**args, "x-max-priority": 3})
            # a fanout ignores routing keys: Celery binds with "celery", celeriac the name
            name, kind, _, args = expected["f"]
            expected["f"] = (name, kind, "f", args)
        assert ours == expected


def test_celery_publish_rule() -> None:
    Exchange, Queue = kombu.Exchange, kombu.Queue
    specs = queue_specs([Queue("d", Exchange("dx"), routing_key="k"),
                         Queue("t", Exchange("tx", type="topic"), routing_key="a.#")])
    assert exchange_route(specs, None, "d") is None  # direct: the default exchange, by name
    assert exchange_route(specs, None, "t") == ("tx", "a.#")
    assert exchange_route(specs, {"exchange": "tx", "routing_key": "a.b"}, "a.b") == (
        "tx", "a.b")
    assert exchange_route(specs, {"exchange": "", "routing_key": "x"}, "x") is None
    assert exchange_route(specs, None, "other") is None


def test_bad_entries_are_refused() -> None:
    with pytest.raises(ValueError, match="exchange type 'fanot'"):
        queue_specs([{"name": "q", "exchange": "x", "exchange_type": "fanot"}])
    with pytest.raises(ValueError, match="no queue name"):
        queue_specs([object()])


def test_no_effect_elsewhere_names_the_queues() -> None:
    Exchange, Queue = kombu.Exchange, kombu.Queue

    class Plain:
        declares_exchanges = False

    class Rabbit:
        declares_exchanges = True

    queues = [Queue("plain"), Queue("same", Exchange("same"), routing_key="same"),
              Queue("ttl", queue_arguments={"x-message-ttl": 1000})]
    text = no_effect_elsewhere(Plain(), queues)
    assert text is not None and "'ttl'" in text and "x-message-ttl" in text
    assert "'plain'" not in text and "'same'" not in text
    assert no_effect_elsewhere(Rabbit(), queues) is None
    assert no_effect_elsewhere(Plain(), [Queue("plain")]) is None
