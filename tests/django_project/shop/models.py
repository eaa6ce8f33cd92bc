"""Models the test project's tasks read and write through the ORM."""

from django.db import models


class Order(models.Model):
    name = models.CharField(max_length=200, unique=True)
    status = models.CharField(max_length=20, default="new")
    processed_by = models.CharField(max_length=200, blank=True, default="")
    runs = models.PositiveIntegerField(default=0)


class Email(models.Model):
    to = models.CharField(max_length=200)
    status = models.CharField(max_length=20, default="sending")
    sent_at = models.DateTimeField(null=True)


class Tick(models.Model):
    """One row per periodic task run (what the beat tests count)."""

    task = models.CharField(max_length=200)
    task_id = models.CharField(max_length=255)
    created = models.DateTimeField(auto_now_add=True)
