"""``celeriac inspect ...`` and ``celeriac control ...``: Celery's remote-control commands.

``celeriac inspect ping|active|reserved|scheduled|registered|stats|revoked|
active_queues|conf|query_task|report|clock|memsample|memdump|objgraph`` (with
Celery's positional arguments: ``memdump [SAMPLES]``, ``objgraph [TYPE [NUM
[MAX_DEPTH]]]``) and ``celeriac control revoke|
terminate|rate_limit|time_limit|add_consumer|cancel_consumer|pool_grow|
pool_shrink|autoscale|enable_events|disable_events|pool_restart|heartbeat|
shutdown`` send the command to every worker (or ``-d name[,name]``), wait
``-t/--timeout`` seconds for replies and print them as Celery does (``->
node: OK`` and the payload), or as one JSON object with ``--json``. As in
Celery, no reply exits with status 69 ("No nodes replied within time
constraint"); ``shutdown`` gets none. ``control revoke_by_stamped_headers
KEY=VALUE...`` is sent as Celery's CLI sends it: Celery workers answer, celeriac
workers reply that they have no such command. ``--list`` prints the commands and
their arguments.
"""

from __future__ import annotations

import json
import pprint
from typing import Any

import click

from .base import CLIContext

EX_UNAVAILABLE = 69

#: command -> [(argument, type, variadic)], Celery's positional arguments
INSPECT: dict[str, list[tuple[str, Any, bool]]] = {
    "ping": [], "active": [], "reserved": [], "scheduled": [],
    "registered": [("taskinfoitems", str, True)], "stats": [], "revoked": [],
    "active_queues": [], "conf": [], "query_task": [("ids", str, True)], "report": [],
    "clock": [], "hello": [("from_node", str, False), ("revoked", str, False)],
    "memsample": [], "memdump": [("samples", int, False)],
    "objgraph": [("type", str, False), ("num", int, False), ("max_depth", int, False)],
}
#: command -> [(argument, type, variadic)]
CONTROL: dict[str, list[tuple[str, Any, bool]]] = {
    "revoke": [("task_id", str, True)],
    "terminate": [("signal", str, False), ("task_id", str, True)],
    "rate_limit": [("task_name", str, False), ("rate_limit", str, False)],
    "time_limit": [("task_name", str, False), ("soft", float, False), ("hard", float, False)],
    "add_consumer": [("queue", str, False), ("exchange", str, False),
                     ("exchange_type", str, False), ("routing_key", str, False)],
    "cancel_consumer": [("queue", str, False)],
    "pool_grow": [("n", int, False)], "pool_shrink": [("n", int, False)],
    "autoscale": [("max", int, False), ("min", int, False)],
    "enable_events": [], "disable_events": [], "pool_restart": [], "heartbeat": [],
    "shutdown": [], "election": [],
    # Celery's stamping (key=value...); celeriac workers reply "No such control command"
    "revoke_by_stamped_headers": [("headers", str, True)],
}


def _destination(value: str | None) -> list[str] | None:
    return [d.strip() for d in value.split(",") if d.strip()] if value else None


def _show(payload: Any) -> str:
    if isinstance(payload, dict) and set(payload) == {"ok"}:
        text = str(payload["ok"])
    elif isinstance(payload, dict) and set(payload) == {"error"}:
        text = f"error: {payload['error']}"
    elif isinstance(payload, list) and not payload:
        text = "- empty -"
    elif isinstance(payload, str):
        text = payload
    else:
        text = pprint.pformat(payload, width=100)
    return "\n".join(f"    {line}" for line in text.splitlines())


def _print(replies: list[dict[str, Any]] | None, as_json: bool, quiet: bool) -> None:
    replies = replies or []
    if not replies:
        raise click.exceptions.Exit(_no_nodes())
    if as_json:
        merged: dict[str, Any] = {}
        for reply in replies:
            merged.update(reply)
        click.echo(json.dumps(merged))
        return
    for reply in replies:
        for node, payload in reply.items():
            failed = isinstance(payload, dict) and "error" in payload
            click.echo(f"->  {node}: {'ERROR' if failed else 'OK'}")
            if not quiet:
                click.echo(_show(payload))
    count = len(replies)
    click.echo(f"\n{count} node{'s' if count != 1 else ''} online.")


def _no_nodes() -> int:
    click.echo("Error: No nodes replied within time constraint", err=True)
    return EX_UNAVAILABLE


def _convert(command: str, spec: list[tuple[str, Any, bool]],
             values: tuple[str, ...]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    rest = list(values)
    for name, kind, variadic in spec:
        if variadic:
            args[name] = [kind(v) for v in rest]
            rest = []
            break
        if not rest:
            continue
        value = rest.pop(0)
        try:
            args[name] = kind(value)
        except ValueError:
            raise click.BadParameter(f"{name} must be {kind.__name__}: {value!r}") from None
    if rest:
        raise click.UsageError(f"{command}: too many arguments: {' '.join(rest)}")
    return args


def _listing(names: dict[str, list[Any]]) -> str:
    """``--list``: each command with its arguments, as Celery's ``--list`` prints them."""
    lines = []
    for name in sorted(names):
        args = " ".join(f"[{a[0] if isinstance(a, tuple) else a}"
                        f"{'...' if isinstance(a, tuple) and a[2] else ''}]"
                        for a in names[name])
        lines.append(f"  {name} {args}".rstrip())
    return "\n".join(lines)


def _method(ctx: click.Context, method: str | None, listing: bool,
            names: dict[str, list[Any]], kind: str) -> str:
    if listing:
        click.echo(f"{kind} commands:\n{_listing(names)}")
        ctx.exit(0)
    if method is None:
        raise click.UsageError("Missing argument 'METHOD' (--list shows them).")
    return method


def _common(fn: Any) -> Any:
    fn = click.option("-t", "--timeout", type=float, default=1.0, show_default=True,
                      help="Seconds to wait for replies.")(fn)
    fn = click.option("-d", "--destination", help="Comma-separated node names.")(fn)
    fn = click.option("-j", "--json", "as_json", is_flag=True, help="Print JSON.")(fn)
    fn = click.option("--list", "listing", is_flag=True,
                      help="List the commands and exit.")(fn)
    return fn


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("method", type=click.Choice(sorted(INSPECT)), required=False)
@click.argument("arguments", nargs=-1)
@click.option("--include-defaults", is_flag=True, help="conf: include default settings.")
@_common
@click.pass_context
def inspect(ctx: click.Context, method: str | None, arguments: tuple[str, ...],
            include_defaults: bool, timeout: float, destination: str | None,
            as_json: bool, listing: bool) -> None:
    """Inspect the workers (Celery's ``celery inspect``)."""
    method = _method(ctx, method, listing, dict(INSPECT), "Inspect")
    obj: CLIContext = ctx.obj
    kwargs = _convert(f"inspect {method}", INSPECT[method], arguments)
    if method == "conf":
        kwargs["with_defaults"] = include_defaults
    replies = obj.app.control.broadcast(method, arguments=kwargs,
                                        destination=_destination(destination), reply=True,
                                        timeout=timeout)
    _print(replies, as_json, quiet=False)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("method", type=click.Choice(sorted(CONTROL)), required=False)
@click.argument("arguments", nargs=-1)
@_common
@click.pass_context
def control(ctx: click.Context, method: str | None, arguments: tuple[str, ...], timeout: float,
            destination: str | None, as_json: bool, listing: bool) -> None:
    """Send a control command to the workers (Celery's ``celery control``)."""
    method = _method(ctx, method, listing, dict(CONTROL), "Control")
    obj: CLIContext = ctx.obj
    kwargs = _convert(method, CONTROL[method], arguments)
    replies = obj.app.control.broadcast(method, arguments=kwargs,
                                        destination=_destination(destination), reply=True,
                                        timeout=timeout)
    _print(replies, as_json, quiet=False)
