"""``celeriac list bindings`` and ``celeriac graph``: how queues, exchanges and workers connect.

``list bindings`` prints the bindings celeriac declares for the app's queues
(``task_queues``, else ``task_default_queue``): queue, exchange and routing key,
in Celery's layout. On RabbitMQ these are the server's bindings of those
queues; other brokers route by queue name, which the listing says. (Celery asks
RabbitMQ's management plugin for every binding of the vhost, and fails on other
transports.)

``graph workers`` prints a Graphviz dot graph of the broker, the queues and the
live worker nodes consuming them (from their heartbeat records, as ``status``).
``graph bootsteps`` is refused: celeriac's worker has no bootsteps.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from ..brokers.declared import queue_specs
from ..brokers.registry import scheme_of
from ..worker.health import read_nodes
from .base import CLIContext


def bindings_of(app: Any) -> list[tuple[str, str, str]]:
    """(queue, exchange, routing key) of every queue the app declares."""
    specs = queue_specs(app.conf.get("task_queues"), app.conf.get("task_queue_max_priority"))
    if not specs:
        name = app.conf.task_default_queue
        return [(name, name, name)]
    return [(s.name, s.exchange, s.routing_key) for s in specs.values()]


@click.group("list")
def list_group() -> None:
    """Get information from the broker."""


@list_group.command("bindings")
@click.pass_obj
def bindings(obj: CLIContext) -> None:
    """Print the queue bindings of the app's queues."""
    app = obj.app
    rows = bindings_of(app)
    scheme = scheme_of(app.broker_url)

    def fmt(queue: str, exchange: str, key: str) -> None:
        click.echo(f"{queue:<28} {exchange:<28} {key}")

    fmt("Queue", "Exchange", "Routing Key")
    fmt("-" * 16, "-" * 16, "-" * 16)
    for row in rows:
        fmt(*row)
    if scheme not in ("amqp", "pyamqp", "amqps"):
        click.echo(f"\n({scheme}:// routes by queue name: exchanges and routing keys take "
                   f"effect on RabbitMQ only)")


@click.group("graph")
def graph_group() -> None:
    """Print graphs in Graphviz dot format."""


def _quoted(text: str) -> str:
    return json.dumps(text)


def workers_dot(broker: str, nodes: list[dict[str, Any]]) -> str:
    """The dot graph: broker -> queue -> worker (with its pool and concurrency)."""
    lines = ["digraph workers {", "  rankdir=LR;", "  node [shape=box, fontname=Helvetica];",
             f"  broker [label={_quoted(broker)}, shape=cylinder];"]
    queues = sorted({q for n in nodes for q in n.get("queues", [])})
    for queue in queues:
        lines.append(f"  {_quoted('queue:' + queue)} [label={_quoted(queue)}, shape=oval];")
        lines.append(f"  broker -> {_quoted('queue:' + queue)};")
    for node in sorted(nodes, key=lambda n: str(n.get("hostname"))):
        host = str(node.get("hostname"))
        label = f"{host}\\n{node.get('pool')} x{node.get('concurrency')}"
        lines.append(f"  {_quoted('node:' + host)} [label=\"{label}\"];")
        for queue in node.get("queues", []):
            lines.append(f"  {_quoted('queue:' + queue)} -> {_quoted('node:' + host)};")
    lines.append("}")
    return "\n".join(lines)


@graph_group.command("workers")
@click.option("--max-age", type=float, default=10.0, show_default=True,
              help="A node is live if its heartbeat is younger than this (seconds).")
@click.pass_obj
def graph_workers(obj: CLIContext, max_age: float) -> None:
    """Print the broker, its queues and the live workers consuming them."""
    app = obj.app
    if app.backend is None:
        raise click.ClickException("graph workers needs a result store (workers publish "
                                   "their heartbeat records there)")
    now = time.time()
    nodes = [n for n in read_nodes(app) if now - float(n.get("timestamp", 0)) <= max_age]
    click.echo(workers_dot(f"{scheme_of(app.broker_url)}://", nodes))


@graph_group.command("bootsteps")
def graph_bootsteps() -> None:
    """Refused: celeriac's worker has no bootsteps (see docs/workers.md)."""
    raise click.ClickException(
        "celeriac's worker has no bootsteps to graph (its parts are fixed: consumer, pool, "
        "renewer, remote control); use 'celeriac graph workers' for the running nodes")
