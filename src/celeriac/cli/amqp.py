"""``celeriac amqp``: Celery's AMQP administration shell, for the RabbitMQ broker.

Each subcommand runs one AMQP 0.9.1 method on the app's RabbitMQ broker
(``broker_url``, through py-amqp, with celeriac's connection settings):
``exchange.declare``, ``exchange.delete``, ``queue.declare``, ``queue.bind``,
``queue.delete``, ``queue.purge``, ``basic.get``, ``basic.publish`` and
``basic.ack``, with Celery's positional arguments. ``amqp`` alone or ``amqp
repl`` reads such commands line by line on one channel (so ``basic.ack``
can acknowledge what ``basic.get`` fetched). Other brokers are refused, naming
the commands that do the same work on them (Celery runs these on kombu's
virtual transports; celeriac's queues there are not AMQP objects). py-amqp is
imported when a command runs (``pip install 'celeriac[amqp]'``).
"""

from __future__ import annotations

import pprint
import shlex
from typing import Any

import click

from ..brokers.base import redact
from ..brokers.registry import scheme_of
from .base import CLIContext

AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")


class Session:
    """One connection and channel to the app's RabbitMQ, opened on first use."""

    def __init__(self, obj: CLIContext) -> None:
        app = obj.app
        self.url = app.broker_url
        if scheme_of(self.url) not in AMQP_SCHEMES:
            raise click.ClickException(
                f"celeriac amqp speaks AMQP to RabbitMQ; this app's broker is "
                f"{scheme_of(self.url)}://. Use 'celeriac purge' (empty queues), "
                f"'celeriac list bindings', 'celeriac status' (queue depths) or "
                f"'celeriac deadletters' there")
        self.options = app._broker_options()
        self.connection: Any = None
        self._channel: Any = None

    @property
    def channel(self) -> Any:
        if self._channel is None:
            import amqp as pyamqp

            from ..brokers.amqp.connection import connection_kwargs, parse_url

            target = parse_url(self.url)[0]
            click.echo(f"-> connecting to {redact(self.url)}.", err=True)
            self.connection = pyamqp.Connection(**connection_kwargs(target, self.options))
            self.connection.connect()
            self._channel = self.connection.channel()
            click.echo("-> connected.", err=True)
        return self._channel

    def run(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self.channel, method)(*args, **kwargs)
        except Exception as exc:  # a channel error closes the channel: start afresh next time
            self.close()
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        connection, self.connection, self._channel = self.connection, None, None
        if connection is not None:
            try:
                connection.close()
            except Exception:
                pass


def dump_message(message: Any) -> Any:
    if message is None:
        return "No messages in queue. basic.publish something."
    return {"body": message.body, "properties": message.properties,
            "delivery_info": message.delivery_info}


def respond(value: Any) -> None:
    click.echo(value if isinstance(value, str) else pprint.pformat(value))


def ok() -> None:
    click.echo("ok.")


@click.group("amqp", invoke_without_command=True)
@click.pass_context
def amqp(ctx: click.Context) -> None:
    """AMQP administration shell (RabbitMQ broker)."""
    if not isinstance(ctx.obj, Session):
        ctx.obj = Session(ctx.obj)
        ctx.call_on_close(ctx.obj.close)
    if ctx.invoked_subcommand is None:
        repl_loop(ctx.obj)


@amqp.command("exchange.declare")
@click.argument("exchange")
@click.argument("type")
@click.argument("passive", type=bool, default=False)
@click.argument("durable", type=bool, default=False)
@click.argument("auto_delete", type=bool, default=False)
@click.pass_obj
def exchange_declare(session: Session, exchange: str, type: str, passive: bool, durable: bool,
                     auto_delete: bool) -> None:
    session.run("exchange_declare", exchange=exchange, type=type, passive=passive,
                durable=durable, auto_delete=auto_delete)
    ok()


@amqp.command("exchange.delete")
@click.argument("exchange")
@click.argument("if_unused", type=bool, default=False)
@click.pass_obj
def exchange_delete(session: Session, exchange: str, if_unused: bool) -> None:
    session.run("exchange_delete", exchange=exchange, if_unused=if_unused)
    ok()


@amqp.command("queue.bind")
@click.argument("queue")
@click.argument("exchange")
@click.argument("routing_key")
@click.pass_obj
def queue_bind(session: Session, queue: str, exchange: str, routing_key: str) -> None:
    session.run("queue_bind", queue=queue, exchange=exchange, routing_key=routing_key)
    ok()


@amqp.command("queue.declare")
@click.argument("queue")
@click.argument("passive", type=bool, default=False)
@click.argument("durable", type=bool, default=False)
@click.argument("auto_delete", type=bool, default=False)
@click.pass_obj
def queue_declare(session: Session, queue: str, passive: bool, durable: bool,
                  auto_delete: bool) -> None:
    name, messages, consumers = session.run("queue_declare", queue=queue, passive=passive,
                                            durable=durable, auto_delete=auto_delete)
    click.echo(f"queue:{name} messages:{messages} consumers:{consumers}")
    ok()


@amqp.command("queue.delete")
@click.argument("queue")
@click.argument("if_unused", type=bool, default=False)
@click.argument("if_empty", type=bool, default=False)
@click.pass_obj
def queue_delete(session: Session, queue: str, if_unused: bool, if_empty: bool) -> None:
    count = session.run("queue_delete", queue=queue, if_unused=if_unused, if_empty=if_empty)
    click.echo(f"{count} messages deleted.")
    ok()


@amqp.command("queue.purge")
@click.argument("queue")
@click.pass_obj
def queue_purge(session: Session, queue: str) -> None:
    count = session.run("queue_purge", queue=queue)
    click.echo(f"{count} messages deleted.")
    ok()


@amqp.command("basic.get")
@click.argument("queue")
@click.argument("no_ack", type=bool, default=False)
@click.pass_obj
def basic_get(session: Session, queue: str, no_ack: bool) -> None:
    respond(dump_message(session.run("basic_get", queue, no_ack=no_ack)))
    ok()


@amqp.command("basic.publish")
@click.argument("msg")
@click.argument("exchange")
@click.argument("routing_key")
@click.argument("mandatory", type=bool, default=False)
@click.argument("immediate", type=bool, default=False)
@click.pass_obj
def basic_publish(session: Session, msg: str, exchange: str, routing_key: str, mandatory: bool,
                  immediate: bool) -> None:
    from amqp import Message

    session.run("basic_publish", Message(msg), exchange=exchange,
                routing_key=routing_key, mandatory=mandatory, immediate=immediate)
    ok()


@amqp.command("basic.ack")
@click.argument("delivery_tag", type=int)
@click.pass_obj
def basic_ack(session: Session, delivery_tag: int) -> None:
    session.run("basic_ack", delivery_tag)
    ok()


@amqp.command("repl")
@click.pass_obj
def repl(session: Session) -> None:
    """Read commands line by line (Ctrl-D or 'exit' ends)."""
    repl_loop(session)


def repl_loop(session: Session) -> None:
    commands = {name: cmd for name, cmd in amqp.commands.items() if name != "repl"}
    while True:
        try:
            line = input("amqp> ")
        except EOFError:
            click.echo()
            return
        parts = shlex.split(line)
        if not parts:
            continue
        if parts[0] in ("exit", "quit"):
            return
        if parts[0] in ("help", "?"):
            click.echo(" ".join(sorted(commands)))
            continue
        command = commands.get(parts[0])
        if command is None:
            click.echo(f"unknown command {parts[0]!r}; one of: {' '.join(sorted(commands))}",
                       err=True)
            continue
        try:
            command.main(args=parts[1:], prog_name=parts[0], obj=session,
                         standalone_mode=False)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
