"""``celeriac migrate SOURCE DESTINATION``: move (``-a``) or copy waiting tasks from one
broker URL to another, as Celery's ``celery migrate``.

Messages are leased from SOURCE (any broker celeriac speaks), published to
DESTINATION unchanged (headers, body, priority), and only then, with
``-a/--ack-messages``, acknowledged on SOURCE: a crash in between leaves a
copy, never a loss. Without ``-a`` (Celery's default) the messages stay on
SOURCE: they are given back when the command ends, as Celery's unacknowledged
messages return to their queue when its connection closes.

``-Q a,b`` chooses the queues (default: the app's, :func:`.base.known_queues`);
``-Q a:b`` puts what ``a`` holds into ``b`` on DESTINATION. ``-T`` keeps only
those task names (others stay on SOURCE); ``-n`` stops after that many;
``-t`` is how long to wait for more before stopping, ``-F`` keeps waiting.
Only ready messages move: delayed ones (an ETA or countdown still in the
future) are taken when they become due (run with ``-F`` until then).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import click

from ..brokers.base import Broker, Delivery, Publish, redact
from ..brokers.registry import broker_for_url
from .base import CLIContext, comma_list, known_queues

#: messages leased per round trip
BATCH = 100


def queue_map(queues: str | None, app: Any) -> dict[str, str]:
    """``-Q``: source queue -> destination queue (``a:b``; ``a`` alone keeps its name)."""
    names = comma_list(queues) or known_queues(app)
    found: dict[str, str] = {}
    for name in names:
        source, _, dest = name.partition(":")
        found[source] = dest or source
    return found


class Migration:
    """One run of ``migrate``: what it leased, moved and holds."""

    def __init__(self, source: Broker, dest: Broker, queues: dict[str, str], *,
                 tasks: set[str], ack: bool, on_moved: Callable[[int, Delivery], None]) -> None:
        self.source, self.dest, self.queues = source, dest, queues
        self.tasks, self.ack, self.on_moved = tasks, ack, on_moved
        self.owner = f"migrate-{os.getpid()}-{time.monotonic_ns()}"
        self.held: list[Delivery] = []  # leased and not acknowledged: given back at the end
        self.moved = 0
        self._renewed = time.monotonic()

    def wanted(self, delivery: Delivery) -> bool:
        return not self.tasks or str(delivery.message.headers.get("task")) in self.tasks

    def step(self, limit: int | None, timeout: float) -> int:
        """Lease one batch and migrate it; return how many were leased (0: none came)."""
        room = BATCH if limit is None else min(BATCH, limit - self.moved)
        got = self.source.receive(list(self.queues), owner=self.owner, limit=room,
                                  timeout=timeout)
        moving = [d for d in got if self.wanted(d)]
        self.held.extend(d for d in got if not self.wanted(d))
        if moving:
            self.dest.publish_many([Publish(d.message, self.queues[d.queue]) for d in moving])
            if self.ack:
                self.source.ack(moving)
            else:
                self.held.extend(moving)
            for delivery in moving:
                self.moved += 1
                self.on_moved(self.moved, delivery)
        self.keep_held()
        return len(got)

    def keep_held(self) -> None:
        """Renew what is held so it does not come back to this run (a duplicate copy)."""
        if self.held and time.monotonic() - self._renewed > self.source.lease_seconds / 3:
            self.source.renew(self.held)
            self._renewed = time.monotonic()

    def give_back(self) -> None:
        for delivery in self.held:
            self.source.release(delivery)
        self.held.clear()


@click.command("migrate")
@click.argument("source")
@click.argument("destination")
@click.option("-n", "--limit", type=int, help="Stop after this many tasks.")
@click.option("-t", "--timeout", type=float, default=1.0, show_default=True,
              help="Seconds to wait for more tasks before stopping.")
@click.option("-a", "--ack-messages", is_flag=True,
              help="Remove the migrated messages from SOURCE (default: copy).")
@click.option("-T", "--tasks", help="Comma-separated task names to migrate (others stay).")
@click.option("-Q", "--queues", help="Comma-separated queues; a:b moves queue a into b.")
@click.option("-F", "--forever", is_flag=True, help="Keep migrating until interrupted.")
@click.pass_obj
def migrate(obj: CLIContext, source: str, destination: str, limit: int | None,
            timeout: float, ack_messages: bool, tasks: str | None, queues: str | None,
            forever: bool) -> None:
    """Migrate tasks from the broker at SOURCE to the broker at DESTINATION."""
    app = obj.app
    options = app._broker_options()
    lease = float(app.conf.worker_lease_seconds)
    src = broker_for_url(source, lease_seconds=lease, options=options)
    dest = broker_for_url(destination, lease_seconds=lease, options=options)
    mapping = queue_map(queues, app)

    def moved(count: int, delivery: Delivery) -> None:
        headers = delivery.message.headers
        if not obj.quiet:
            click.echo(f"Migrating task {count}/{limit or '?'}: {headers.get('task')}"
                       f"[{headers.get('id')}] {delivery.queue} -> {mapping[delivery.queue]}")

    run = Migration(src, dest, mapping, tasks=set(comma_list(tasks)), ack=ack_messages,
                    on_moved=moved)
    try:
        while limit is None or run.moved < limit:
            if not run.step(limit, timeout) and not forever:
                break
    except KeyboardInterrupt:
        pass
    finally:
        run.give_back()
        src.close()
        dest.close()
    click.echo(f"Migrated {run.moved} task{'s' if run.moved != 1 else ''} from "
               f"{redact(source)} to {redact(destination)}"
               f"{'' if ack_messages else ' (copied: they stay on the source; -a moves them)'}.")
