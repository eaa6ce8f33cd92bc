"""The transactional outbox: ``delay()`` inside ``transaction.atomic()`` commits with the data.

With ``task_outbox = True`` (``CELERY_TASK_OUTBOX = True``), a task published
while the ``task_outbox_database`` connection (``default``) is inside
``transaction.atomic()`` is not sent to the broker: its message is written to
the ``celeriac_outbox`` table in the same transaction. A rollback removes it
with the rest of the transaction; a commit makes it visible to the **relay**,
which publishes committed rows to the broker (Redis, RabbitMQ, SQLite...):

1. right after the commit, in the process that committed (``on_commit``), so
   the normal delay is one broker round trip, as with ``delay_on_commit``;
2. otherwise (that process died between commit and publish, the broker was
   down) by a relay loop: a thread in every worker (``worker_outbox_relay``,
   on by default) or ``celeriac -A proj outbox relay``.

Publishing is fenced by a **claim**: one ``UPDATE`` marks the rows a relay will
publish (a random token and an expiry, ``task_outbox_claim_timeout``), the relay
publishes them and marks them sent. A relay that dies after claiming leaves the
rows to be re-claimed when the claim lapses, so nothing committed is lost.
A relay that dies after publishing but before marking may cause a second
publish of the row: each publish carries the header
``celeriac_outbox = "<alias>:<row id>:<attempt>"``, the first worker to run a
copy records its attempt in the row (``accepted_attempt``), and a copy with
another attempt is dropped by every worker (:func:`admit`). So each committed
message runs once per task id (redeliveries after a worker crash still run,
as always). Sent rows are kept ``task_outbox_retention`` seconds (one day) for
that check, then deleted by the relay.

When the broker is the same PostgreSQL database as Django's, no outbox is
needed: the broker enqueues in the caller's transaction
(:func:`same_database_publisher`, see ``docs/django.md``).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from celeriac.app.publish import publish_items
from celeriac.brokers.base import Publish
from celeriac.config.settings import seconds
from celeriac.messages import Message

from ..transactions import InTransaction
from ..transactions import same_database_publisher as shared_publisher
from .db import db_time, fresh

logger = logging.getLogger("celeriac.outbox")

HEADER = "celeriac_outbox"
BATCH = 200
POLL_INTERVAL = 0.5
PRUNE_EVERY = 60.0
DEFAULT_CLAIM_TIMEOUT = 30.0


def _model() -> Any:
    from .models import OutboxMessage

    return OutboxMessage


def same_database_publisher(app: Any, alias: str) -> InTransaction | None:
    """A callable publishing ``items`` inside the transaction of a Django connection, when
    the broker lives in that same database (PostgreSQL broker), else None.

    The seam for transactional enqueue without an outbox, shared with the Pyramid
    integration (:func:`celeriac.contrib.transactions.same_database_publisher`): it
    is given Django's ``connections[alias].settings_dict`` and, to publish, Django's
    connection wrapper. Every broker but PostgreSQL says no, so the outbox is used.
    """
    from django.db import connections

    return shared_publisher(app, connections[alias].settings_dict)


# -- producer side -------------------------------------------------------------------------
def intercept(app: Any, items: Sequence[Publish]) -> bool:
    """Publish interceptor: take ``items`` into the outbox when inside a transaction."""
    conf = app.conf
    if not conf.get("task_outbox"):
        return False
    from django.db import connections, transaction

    alias = str(conf.get("task_outbox_database") or "default")
    conn = connections[alias]
    if not conn.in_atomic_block:
        return False
    direct = same_database_publisher(app, alias)
    if direct is not None:
        direct(items, conn)
        return True
    rows = write(items, alias)
    transaction.on_commit(functools.partial(relay_now, app, alias, rows), using=alias)
    return True


def write(items: Sequence[Publish], alias: str) -> list[int]:
    """Insert ``items`` as outbox rows on ``alias`` (inside the caller's transaction)."""
    model = _model()
    created = model.objects.using(alias).bulk_create([model(
        task_id=item.message.task_id or "", task_name=item.message.task_name or "",
        queue=item.queue, envelope=item.message.dumps(item.queue), not_before=item.not_before,
        priority=item.priority) for item in items])
    return [row.pk for row in created]


def relay_now(app: Any, alias: str, ids: list[int]) -> None:
    """After commit: publish these rows at once; on failure the relay loop will."""
    try:
        Relay(app, alias).relay(ids)
    except Exception as exc:
        logger.warning("outbox: publishing %d committed message(s) failed (%s); the relay "
                       "will send them", len(ids), exc)


# -- worker side ---------------------------------------------------------------------------
def admit(app: Any, call: Any) -> str | None:
    """Admission check: drop a second publish of one outbox row (see the module docs)."""
    marker = call.headers.get(HEADER) if isinstance(call.headers, dict) else None
    if not marker:
        return None
    try:
        alias, row_id, attempt = str(marker).rsplit(":", 2)
        pk, number = int(row_id), int(attempt)
    except ValueError:
        return None
    from django.conf import settings
    from django.db.models import Q

    if alias not in settings.DATABASES:
        return None
    fresh(alias)
    rows = _model().objects.using(alias).filter(pk=pk)
    if rows.filter(Q(accepted_attempt__isnull=True) | Q(accepted_attempt=number)).update(
            accepted_attempt=number):
        return None
    if rows.exists():
        return (f"duplicate publish of outbox message {pk} (attempt {number}); another "
                f"attempt was accepted")
    return None  # pruned: nothing left to compare with, run it


# -- the relay ---------------------------------------------------------------------------
class Relay:
    """Moves committed outbox rows to the broker (see the module docstring)."""

    def __init__(self, app: Any, alias: str | None = None, *, batch: int = BATCH,
                 claim_timeout: float | None = None) -> None:
        conf = app.conf
        self.app = app
        self.alias = alias or str(conf.get("task_outbox_database") or "default")
        self.batch = batch
        self.claim_timeout = float(claim_timeout or conf.get("task_outbox_claim_timeout")
                                   or DEFAULT_CLAIM_TIMEOUT)
        self.retention = seconds(conf.get("task_outbox_retention")) or 86400.0
        self.sent = 0
        self._last_prune = 0.0

    def _rows(self) -> Any:
        fresh(self.alias)
        return _model().objects.using(self.alias)

    def pending_ids(self) -> list[int]:
        from django.db.models import Q

        now = time.time()
        rows = self._rows().filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now),
                                   sent_at__isnull=True)
        return list(rows.order_by("id").values_list("id", flat=True)[:self.batch])

    def relay(self, ids: list[int]) -> int:
        """Claim, publish and mark these rows; return how many were published."""
        from django.db.models import F, Q

        if not ids:
            return 0
        token, now = uuid.uuid4().hex, time.time()
        rows = self._rows()
        claimed = rows.filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now),
                              pk__in=ids, sent_at__isnull=True).update(
            claim=token, claimed_until=now + self.claim_timeout, attempts=F("attempts") + 1)
        if not claimed:
            return 0
        mine = list(rows.filter(claim=token).order_by("id"))
        items = [self._item(row) for row in mine if row.accepted_attempt is None]
        try:
            if items:  # the app's publish path (retry policy, deadline), not intercepted
                publish_items(self.app, items, intercept=False)
        except Exception:
            rows.filter(claim=token).update(claim=None, claimed_until=None)
            raise
        rows.filter(claim=token).update(sent_at=db_time(datetime.now(timezone.utc)), claim=None,
                                        claimed_until=None)
        self.sent += len(items)
        return len(items)

    def _item(self, row: Any) -> Publish:
        message = Message.loads(row.envelope)
        message = message.with_headers(**{HEADER: f"{self.alias}:{row.pk}:{row.attempts}"})
        return Publish(message, row.queue, row.not_before, row.priority)

    def run_once(self) -> int:
        """Publish every committed row waiting now; return how many were published."""
        total = 0
        while True:
            ids = self.pending_ids()
            if not ids:
                break
            sent = self.relay(ids)
            total += sent
            if len(ids) < self.batch or not sent:
                break
        self.prune()
        return total

    def prune(self, force: bool = False) -> int:
        now = time.monotonic()
        if not force and now - self._last_prune < PRUNE_EVERY:
            return 0
        self._last_prune = now
        cutoff = db_time(datetime.now(timezone.utc) - timedelta(seconds=self.retention))
        return int(self._rows().filter(sent_at__lt=cutoff).delete()[0])

    def run(self, stop: threading.Event, interval: float = POLL_INTERVAL) -> None:
        """Relay until ``stop`` is set (the worker's relay thread, ``outbox relay``)."""
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:
                logger.exception("outbox: relay pass failed; retrying")
            stop.wait(interval)
        from django.db import connections

        connections[self.alias].close()
