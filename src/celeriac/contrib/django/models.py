"""The transactional outbox table (app label ``celeriac``), see :mod:`.outbox`.

One row per message written inside a transaction: the complete protocol-v2
envelope, its queue, delay and priority, and the relay's bookkeeping
(``attempts``, the current ``claim`` and its expiry, ``sent_at``) plus
``accepted_attempt``, which the first worker to run the task records so a second
publish of the same row is dropped. Unsent rows are found through a partial
index, so a large table of sent rows kept for de-duplication costs nothing.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class OutboxMessage(models.Model):
    id = models.BigAutoField(primary_key=True)
    task_id = models.CharField(_("Task ID"), max_length=255, db_index=True)
    task_name = models.CharField(_("Task Name"), max_length=255)
    queue = models.CharField(_("Queue"), max_length=255)
    envelope = models.TextField(_("Message"))
    not_before = models.FloatField(_("Not before (epoch seconds)"), null=True)
    priority = models.SmallIntegerField(_("Priority"), null=True)
    created_at = models.DateTimeField(_("Written"), default=timezone.now)
    attempts = models.PositiveIntegerField(_("Publish attempts"), default=0)
    claim = models.CharField(max_length=64, null=True)
    claimed_until = models.FloatField(null=True)
    sent_at = models.DateTimeField(_("Sent"), null=True)
    accepted_attempt = models.PositiveIntegerField(_("Attempt run by a worker"), null=True)

    class Meta:
        db_table = "celeriac_outbox"
        verbose_name = _("outbox message")
        verbose_name_plural = _("outbox messages")
        indexes = [
            models.Index(fields=["id"], name="celeriac_outbox_unsent",
                         condition=Q(sent_at__isnull=True)),
            models.Index(fields=["sent_at"], name="celeriac_outbox_sent_at"),
            models.Index(fields=["claim"], name="celeriac_outbox_claim"),
        ]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}] ({'sent' if self.sent_at else 'pending'})"
