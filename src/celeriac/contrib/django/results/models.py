"""Result models with django-celery-results' names and fields, indexed for large tables.

``TaskResult`` keeps one row per task id (``task_id``, ``task_name``,
``task_args``, ``task_kwargs``, ``status``, ``worker``, ``content_type``,
``content_encoding``, ``result``, ``traceback``, ``meta``, ``date_created``,
``date_started``, ``date_done``, ``periodic_task_name``) plus ``expires_at``
(celeriac's per-result expiry: rows past it are invisible and removed by
``cleanup``). ``result`` is the JSON of the task's return value (or its
exception); ``meta`` holds the rest of Celery's result metadata (children,
``date_done`` as stored, group and parent ids, extended fields), so a stored
result reads back exactly as written.

Indexes: every column the admin filters or sorts on leads an index, and the
common "state, newest first" and "task, newest first" views have composite
indexes, so a changelist over a million rows reads one index range.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from celeriac import states

STATE_CHOICES = sorted((s, s) for s in states.ALL_STATES)


class TaskResult(models.Model):
    """The result of one task."""

    task_id = models.CharField(_("Task ID"), max_length=255, unique=True)
    periodic_task_name = models.CharField(_("Periodic Task Name"), max_length=255, null=True,
                                          blank=True)
    task_name = models.CharField(_("Task Name"), max_length=255, null=True, blank=True)
    task_args = models.TextField(_("Task Positional Arguments"), null=True, blank=True)
    task_kwargs = models.TextField(_("Task Named Arguments"), null=True, blank=True)
    status = models.CharField(_("Task State"), max_length=50, default=states.PENDING,
                              choices=STATE_CHOICES)
    worker = models.CharField(_("Worker"), max_length=100, null=True, blank=True, default=None)
    content_type = models.CharField(_("Result Content Type"), max_length=128,
                                    default="application/json")
    content_encoding = models.CharField(_("Result Encoding"), max_length=64, default="utf-8")
    result = models.TextField(_("Result Data"), null=True, default=None, editable=False)
    date_created = models.DateTimeField(_("Created DateTime"), auto_now_add=True)
    date_started = models.DateTimeField(_("Started DateTime"), null=True, default=None)
    date_done = models.DateTimeField(_("Completed DateTime"), null=True, default=None)
    traceback = models.TextField(_("Traceback"), blank=True, null=True)
    meta = models.TextField(_("Task Meta Information"), null=True, default=None, editable=False)
    expires_at = models.DateTimeField(_("Expires"), null=True, default=None)

    class Meta:
        verbose_name = _("task result")
        verbose_name_plural = _("task results")
        ordering = ["-date_done"]
        indexes = [
            models.Index(fields=["-date_done"], name="celeriac_tr_done"),
            models.Index(fields=["status", "-date_done"], name="celeriac_tr_status_done"),
            models.Index(fields=["task_name", "-date_done"], name="celeriac_tr_task_done"),
            models.Index(fields=["periodic_task_name"], name="celeriac_tr_periodic"),
            models.Index(fields=["worker"], name="celeriac_tr_worker"),
            models.Index(fields=["date_created"], name="celeriac_tr_created"),
            models.Index(fields=["expires_at"], name="celeriac_tr_expires"),
        ]

    def __str__(self) -> str:
        return f"<Task: {self.task_id} ({self.status})>"


class GroupResult(models.Model):
    """The saved result of a group (``GroupResult.save()``)."""

    group_id = models.CharField(_("Group ID"), max_length=255, unique=True)
    date_created = models.DateTimeField(_("Created DateTime"), auto_now_add=True)
    date_done = models.DateTimeField(_("Completed DateTime"), auto_now=True)
    content_type = models.CharField(_("Result Content Type"), max_length=128,
                                    default="application/json")
    content_encoding = models.CharField(_("Result Encoding"), max_length=64, default="utf-8")
    result = models.TextField(_("Result Data"), null=True, default=None, editable=False)
    expires_at = models.DateTimeField(_("Expires"), null=True, default=None)

    class Meta:
        verbose_name = _("group result")
        verbose_name_plural = _("group results")
        ordering = ["-date_done"]
        indexes = [
            models.Index(fields=["-date_done"], name="celeriac_gr_done"),
            models.Index(fields=["date_created"], name="celeriac_gr_created"),
            models.Index(fields=["expires_at"], name="celeriac_gr_expires"),
        ]

    def __str__(self) -> str:
        return f"<Group: {self.group_id}>"


class StoreEntry(models.Model):
    """Other keys the result store holds for celeriac (worker health records)."""

    key = models.CharField(max_length=255, unique=True)
    value = models.TextField()
    expires_at = models.DateTimeField(null=True, default=None, db_index=True)

    class Meta:
        verbose_name = _("store entry")
        verbose_name_plural = _("store entries")

    def __str__(self) -> str:
        return self.key


class ChordCounter(models.Model):
    """How many header members of a chord finished (the chord join)."""

    group_id = models.CharField(_("Group ID"), max_length=255, unique=True)
    sub_tasks = models.TextField(_("Header size"), default="")
    count = models.PositiveIntegerField(_("Finished members"), default=0)
    expires_at = models.DateTimeField(_("Expires"), null=True, default=None, db_index=True)

    class Meta:
        verbose_name = _("chord counter")
        verbose_name_plural = _("chord counters")

    def __str__(self) -> str:
        return f"<Chord: {self.group_id} {self.count}/{self.sub_tasks}>"


class ChordPart(models.Model):
    """The result meta of one chord header member (the first stored wins)."""

    group_id = models.CharField(max_length=255)
    index = models.PositiveIntegerField()
    meta = models.TextField()
    expires_at = models.DateTimeField(null=True, default=None, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["group_id", "index"],
                                               name="celeriac_chord_part_unique")]
