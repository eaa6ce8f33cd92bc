"""``celeriac deadletters list|retry|purge`` and ``celeriac status`` (registered by the CLI).

``deadletters list`` shows, per dead letter: id, queue, reason, task name and
id, args/kwargs (repr, cut to ``--width``), first delivery and dead-at times,
deliveries and how many of them were lost with their worker. ``retry``
re-publishes one (``--id``) or all (of ``-Q``) with counters reset;
``purge`` deletes them.

``status`` lists worker nodes whose heartbeat is younger than ``--max-age``
seconds (``-d``: only those nodes; ``-t``: waiting that long for a first one, as
Celery waits for ping replies) and exits 1 when there is none, then the concurrency
slots held now
(``serial_task``, ``concurrency_limit``: slot, task id, holder, lease left);
then, per queue, depth, oldest message age and time-to-start against its
target (:mod:`.queues`), exiting 1 when a queue's target is breached.
``status --liveness NODE`` is a probe: it exits 1 when the node has no fresh
heartbeat, or made no progress
(receive, finished or running task) for ``--max-silence`` seconds while one
of its queues has ready messages.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any

import click

from ..brokers.base import DeadLetter
from ..serialization import accepted_types, loads
from ..worker.health import read_nodes
from .queues import print_rows, queue_rows


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(0, width - 3)] + "..."


def _args_of(dead: DeadLetter) -> tuple[Any, Any]:
    message = dead.message
    try:
        # only JSON is decoded for display: a dead letter may be hostile
        body = loads(message.body, message.content_type, accepted_types(["json"]))
    except Exception:
        return "<undecodable body>", ""
    if isinstance(body, (list, tuple)) and len(body) >= 2:
        return body[0], body[1]
    return body, ""


def describe(dead: DeadLetter, width: int = 60) -> dict[str, Any]:
    """One dead letter as a flat dict (what ``list`` prints)."""
    args, kwargs = _args_of(dead)
    headers = dead.message.headers
    return {
        "id": dead.id, "queue": dead.queue, "reason": dead.reason,
        "task": headers.get("task"), "task_id": headers.get("id"),
        "args": _cut(str(headers.get("argsrepr") or repr(args)), width),
        "kwargs": _cut(str(headers.get("kwargsrepr") or repr(kwargs)), width),
        "first_delivered": _when(dead.first_delivered_at), "dead_at": _when(dead.dead_at),
        "deliveries": dead.delivery_count, "lost": dead.lost_count,
    }


@click.group()
def deadletters() -> None:
    """List, retry or purge messages in the dead-letter store."""


@deadletters.command("list")
@click.option("-Q", "--queue", help="Only this queue.")
@click.option("--id", "dead_id", help="Only this dead letter.")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--width", type=int, default=60, show_default=True, help="Cut args to this.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
def list_command(obj: Any, queue: str | None, dead_id: str | None, limit: int, width: int,
                 as_json: bool) -> None:
    """Show dead letters, oldest first."""
    items = [d for d in obj.app.broker.dead_letters(queue, limit=limit if not dead_id else 10**6)
             if dead_id is None or d.id == dead_id]
    if not items:
        click.echo("No dead letters.")
        return
    for dead in items:
        info = describe(dead, width)
        if as_json:
            click.echo(json.dumps(info))
            continue
        click.echo(f"{info['id']}  queue={info['queue']}  task={info['task']}[{info['task_id']}]"
                   f"\n    reason: {info['reason']}\n    args: {info['args']}  kwargs: "
                   f"{info['kwargs']}\n    first delivered: {info['first_delivered']}  dead at: "
                   f"{info['dead_at']}  deliveries: {info['deliveries']} (lost with worker: "
                   f"{info['lost']})")


@deadletters.command("retry")
@click.option("-Q", "--queue", help="Retry every dead letter of this queue.")
@click.option("--id", "dead_id", help="Retry this dead letter.")
@click.option("--all", "everything", is_flag=True, help="Retry every dead letter.")
@click.pass_obj
def retry_command(obj: Any, queue: str | None, dead_id: str | None, everything: bool) -> None:
    """Re-publish dead letters to their queue with counters reset."""
    broker = obj.app.broker
    if dead_id is None and queue is None and not everything:
        raise click.UsageError("give --id ID, -Q QUEUE or --all")
    if dead_id is not None:
        ids = [dead_id]
    else:
        ids = [d.id for d in broker.dead_letters(queue, limit=10**6)]
    done = sum(1 for i in ids if broker.retry_dead_letter(i))
    click.echo(f"Retried {done} dead letter{'s' if done != 1 else ''}.")
    if dead_id is not None and not done:
        raise click.ClickException(f"No dead letter with id {dead_id}")


@deadletters.command("purge")
@click.option("-Q", "--queue", help="Only this queue.")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def purge_command(obj: Any, queue: str | None, force: bool) -> None:
    """Delete dead letters (of one queue, or all)."""
    if not force:
        click.confirm(f"Delete dead letters of {queue or 'all queues'}?", abort=True)
    count = obj.app.broker.purge_dead_letters(queue)
    click.echo(f"Purged {count} dead letter{'s' if count != 1 else ''}.")


@click.command()
@click.option("--max-age", type=float, default=10.0, show_default=True,
              help="A node is alive if its heartbeat is younger than this (seconds).")
@click.option("--liveness", "node", help="Probe one node (hostname, or its name part).")
@click.option("--max-silence", type=float, default=60.0, show_default=True,
              help="With --liveness: seconds without progress allowed while queues wait.")
@click.option("-j", "--json", "as_json", is_flag=True)
@click.option("--queues-json", is_flag=True,
              help="With --json: {\"nodes\": [...], \"queues\": [...]}.")
@click.option("-t", "--timeout", type=float, default=1.0, show_default=True,
              help="Seconds to wait for a first live node when none is seen yet.")
@click.option("-d", "--destination", help="Only these nodes (comma-separated names).")
@click.pass_obj
def status(obj: Any, max_age: float, node: str | None, max_silence: float,
           as_json: bool, queues_json: bool, timeout: float, destination: str | None) -> None:
    """Ping workers: list nodes seen alive; exit 1 if none (or the probed node is not live)."""
    app = obj.app
    if app.backend is None:
        raise click.ClickException("status needs a result store (workers publish heartbeats "
                                   "there)")
    wanted = {d.strip() for d in (destination or "").split(",") if d.strip()}
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        now = time.time()
        alive = [n for n in read_nodes(app) if now - float(n.get("timestamp", 0)) <= max_age
                 and (not wanted or n["hostname"] in wanted
                      or n["hostname"].split("@")[0] in wanted)]
        if alive or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    if node is not None:
        _probe(app, alive, node, max_silence, now)
        return
    rows = queue_rows(app, alive)
    if as_json:
        click.echo(json.dumps({"nodes": alive, "queues": rows} if queues_json else alive))
    for n in alive if not as_json else ():
        click.echo(f"{n['hostname']}: OK  pid={n['pid']} pool={n['pool']} "
                   f"concurrency={n['concurrency']} busy={n['busy']} "
                   f"processed={n['processed']} queues={','.join(n['queues'])} "
                   f"last heartbeat {now - n['timestamp']:.1f}s ago")
    if not as_json:
        _print_slots(app, now)
    if not alive:
        raise click.ClickException("No nodes replied within time constraint")
    if not as_json:
        click.echo(f"\n{len(alive)} node{'s' if len(alive) != 1 else ''} online.")
        print_rows(rows)
    breached = [r["queue"] for r in rows if r["breached"]]
    if breached:
        raise click.ClickException(f"time-to-start target breached on: {', '.join(breached)}")


def _print_slots(app: Any, now: float) -> None:
    """Concurrency slots held now (``serial_task``, ``concurrency_limit``): who holds them."""
    holders = app.broker.slot_holders()
    if not holders:
        return
    click.echo("slots held:")
    for h in holders:
        left = f"{h.lease_expires - now:.1f}s" if h.lease_expires else "-"
        click.echo(f"  {h.name}: task {h.task_id} on {h.owner} (lease {left} left)")


def _probe(app: Any, alive: list[dict[str, Any]], name: str, max_silence: float,
           now: float) -> None:
    found = [n for n in alive if n["hostname"] == name or n["hostname"].split("@")[0] == name]
    if not found:
        raise click.ClickException(f"{name}: no heartbeat (worker down or unknown)")
    node = found[0]
    silent = now - float(node.get("last_progress", 0))
    if silent > max_silence:
        waiting = sum(app.broker.stats(q).ready for q in node["queues"])
        if waiting:
            raise click.ClickException(
                f"{node['hostname']}: no progress for {silent:.0f}s while {waiting} "
                f"message(s) wait")
    click.echo(f"{node['hostname']}: live (last progress {silent:.1f}s ago)")
