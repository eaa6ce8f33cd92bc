"""The ``rpc://`` result store: results travel as messages to the caller's reply queue.

Celery's RPC result backend on RabbitMQ, on the wire:

* **The caller** sends each task with ``reply_to`` = its thread's oid
  (``app.thread_oid``) and ``correlation_id`` = the task id, and declares
  the reply queue named by that oid before it publishes (:meth:`on_publish`):
  durable, auto-delete, ``x-expires`` = ``result_expires`` in ms, bound to the
  default exchange, as kombu declares Celery's ``binding``. ``wait`` consumes
  that queue on a connection of the thread's own and blocks in the socket read
  until the task's final state arrives: no polling. States of other tasks that
  arrive meanwhile are kept in memory for their own ``get``/``wait``.
* **The worker** publishes every state it stores (``STARTED``, ``RETRY``,
  ``SUCCESS``, ``FAILURE``, ``REVOKED``...) as Celery's result meta (JSON) to
  the default exchange with routing key = the task's ``reply_to`` and its
  ``correlation_id``, ``delivery_mode`` 1 (2 with ``result_persistent``), on
  a channel with publisher confirms. The worker learns the destination from
  the task's request (:attr:`wants_reply_to`: the meta it is given carries
  ``reply_to``/``correlation_id``, removed before publishing). A state with
  no destination (a task sent without ``reply_to``) is dropped, as Celery does.

Nothing is stored in RabbitMQ beyond the reply message: a result is read by the
process (and thread) that sent the task, once; another process sees
``PENDING``. The REVOKED rule is kept by the reader: after ``REVOKED`` the
other states of that task are ignored. What needs stored results is refused
with ``ImproperlyConfigured`` naming it: chords, ``GroupResult.save``,
downloads. The worker's heartbeat records (``celeriac status``) are not kept.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import amqp

from ... import states
from ...exceptions import ImproperlyConfigured, OperationalError
from ...results.store import ResultStore, decode_task_meta, encode_meta
from ..base import redact
from .connection import RETRYABLE_ERRORS, Link

#: result-store keys the worker writes for ``celeriac status``; not kept here
_WORKER_RECORDS = "celeriac-worker"
#: metas kept per thread for tasks nobody waited for yet (oldest dropped first)
KEEP = 10_000


@dataclass
class _Inbox:
    """One thread's reply queue, its connection and the states it received."""

    queue: str
    link: Link
    metas: dict[str, dict[str, Any]] = field(default_factory=dict)
    generation: int = -1


class RPCResultStore(ResultStore):
    """Results as messages to the caller's reply queue (see the module docstring)."""

    schemes: ClassVar[tuple[str, ...]] = ("rpc",)
    wants_reply_to: ClassVar[bool] = True

    def __init__(self, url: str, *, expires: float | None = 86400.0,
                 options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, expires=expires, options=options)
        broker_url = str(self.options.get("broker_url") or "")
        if broker_url.split("://", 1)[0].lower() not in ("amqp", "amqps", "pyamqp"):
            raise ImproperlyConfigured(
                f"result_backend: rpc:// sends results through the RabbitMQ broker; "
                f"broker_url is {redact(broker_url) or 'not set'!r} (use amqp://)")
        self.broker_url = broker_url
        self.link_options = dict(self.options.get("broker_options") or {})
        self.persistent = bool(self.options.get("persistent"))
        reply_queue = self.options.get("reply_queue")
        self._reply_queue: Callable[[], str] | None = (
            reply_queue if callable(reply_queue) else None)
        self._pub = Link(broker_url, self.link_options, confirms=True)
        self._local = threading.local()
        self._inboxes: list[_Inbox] = []  # every thread's, closed by close()
        self._inboxes_lock = threading.Lock()

    # -- the caller's side ---------------------------------------------------------
    def _inbox(self, create: bool) -> _Inbox | None:
        inbox: _Inbox | None = getattr(self._local, "inbox", None)
        if inbox is not None and getattr(self._local, "pid", None) == os.getpid():
            return inbox
        if not create or self._reply_queue is None:
            return None
        inbox = _Inbox(self._reply_queue(), Link(self.broker_url, self.link_options,
                                                 confirms=False))
        self._local.inbox, self._local.pid = inbox, os.getpid()
        with self._inboxes_lock:
            self._inboxes.append(inbox)
        return inbox

    def _ready(self, inbox: _Inbox) -> amqp.Connection:
        """The inbox's connection, its queue declared and consumed (link lock held)."""
        chan = inbox.link.channel()
        if inbox.generation != inbox.link.generation:
            args = {"x-expires": int(self.expires * 1000)} if self.expires else None
            chan.queue_declare(inbox.queue, durable=True, auto_delete=True, arguments=args)
            chan.basic_consume(inbox.queue, no_ack=True,
                               callback=lambda raw: self._arrived(inbox, raw))
            inbox.generation = inbox.link.generation
        return chan.connection

    def _arrived(self, inbox: _Inbox, raw: amqp.Message) -> None:
        body = raw.body if isinstance(raw.body, bytes) else str(raw.body).encode("utf-8")
        correlation = raw.properties.get("correlation_id")
        try:
            meta = json.loads(body)
        except ValueError:
            return
        if not isinstance(meta, dict):
            return
        task_id = str(meta.get("task_id") or correlation or "")
        current = inbox.metas.get(task_id)
        if current is not None and current.get("status") == states.REVOKED:
            return  # the REVOKED rule, kept by the reader
        inbox.metas.pop(task_id, None)
        inbox.metas[task_id] = meta
        while len(inbox.metas) > KEEP:
            inbox.metas.pop(next(iter(inbox.metas)))

    def _drain(self, inbox: _Inbox, task_id: str, timeout: float | None) -> None:
        """Read replies until ``task_id`` is ready or ``timeout`` (None: forever; 0: only
        what has arrived)."""
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with inbox.link.lock:
            try:
                conn = self._ready(inbox)
                while True:
                    meta = inbox.metas.get(task_id)
                    if meta is not None and meta.get("status") in states.READY_STATES:
                        return
                    left = None if deadline is None else deadline - time.monotonic()
                    try:  # blocks in the socket read: no polling
                        conn.drain_events(timeout=1.0 if left is None
                                          else max(0.0, min(left, 1.0)))
                    except TimeoutError:
                        if left is not None and left <= 0:
                            return
            except RETRYABLE_ERRORS as exc:
                inbox.link.reset()
                raise OperationalError(f"rpc:// reply queue at {redact(self.broker_url)}: "
                                       f"{exc}") from exc

    def on_publish(self) -> None:
        """Declare this thread's reply queue (before a task naming it is sent)."""
        inbox = self._inbox(create=True)
        if inbox is None or inbox.generation == inbox.link.generation >= 0:
            return
        with inbox.link.lock:
            try:
                self._ready(inbox)
            except RETRYABLE_ERRORS as exc:
                inbox.link.reset()
                raise OperationalError(f"rpc:// reply queue at {redact(self.broker_url)}: "
                                       f"{exc}") from exc

    def get(self, task_id: str) -> dict[str, Any] | None:
        inbox = self._inbox(create=False)
        if inbox is None:
            return None
        self._drain(inbox, task_id, 0)
        meta = inbox.metas.get(task_id)
        return decode_task_meta(task_id, encode_meta(meta)) if meta is not None else None

    def get_many(self, task_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        out = {}
        for task_id in task_ids:
            meta = self.get(task_id)
            if meta is not None:
                out[task_id] = meta
        return out

    def wait(self, task_id: str, *, timeout: float | None = None,
             interval: float = 0.05) -> dict[str, Any] | None:
        inbox = self._inbox(create=True)
        if inbox is None:
            return None
        self._drain(inbox, task_id, timeout)
        meta = inbox.metas.get(task_id)
        return decode_task_meta(task_id, encode_meta(meta)) if meta is not None else None

    def delete(self, task_id: str) -> None:
        inbox = self._inbox(create=False)
        if inbox is not None:
            inbox.metas.pop(task_id, None)

    # -- the worker's side ---------------------------------------------------------
    def set_many(self, items: Iterable[tuple[str, Mapping[str, Any]]], *,
                 expires: float | None = -1) -> list[bool]:
        out = []
        batch = []
        for task_id, given in items:
            meta = dict(given)
            reply_to = meta.pop("reply_to", None)
            correlation_id = meta.pop("correlation_id", None) or task_id
            out.append(bool(reply_to))
            if reply_to:
                batch.append((str(reply_to), str(correlation_id), encode_meta(meta)))
        if batch:
            self._send(batch)
        return out

    def _send(self, batch: list[tuple[str, str, str]]) -> None:
        with self._pub.lock:
            try:
                chan = self._pub.channel()
                for reply_to, correlation_id, body in batch:
                    chan.basic_publish_confirm(
                        amqp.Message(body.encode("utf-8"), content_type="application/json",
                                     content_encoding="utf-8", correlation_id=correlation_id,
                                     delivery_mode=2 if self.persistent else 1),
                        exchange="", routing_key=reply_to)
            except RETRYABLE_ERRORS as exc:
                self._pub.reset()
                raise OperationalError(f"rpc:// result to RabbitMQ at "
                                       f"{redact(self.broker_url)}: {exc}") from exc

    # -- what needs stored results ----------------------------------------------------
    def _refuse(self, what: str) -> ImproperlyConfigured:
        return ImproperlyConfigured(
            f"{what} needs stored results; result_backend rpc:// only sends each state to "
            f"the caller (use Redis, PostgreSQL or SQLite as result_backend)")

    def _get_raw(self, key: str) -> str | bytes | None:
        return None  # nothing is stored (the worker's records, a chord's size)

    def _set_raw(self, key: str, value: str, expires: float | None) -> None:
        if key.startswith(_WORKER_RECORDS):
            return  # the worker's heartbeat record: not kept (docs/rabbitmq.md)
        raise self._refuse(f"storing {key!r}")

    def _delete_raw(self, key: str) -> None:
        return None

    def check_chords(self) -> None:
        raise self._refuse("a chord")

    def save_group(self, group_id: str, meta: Mapping[str, Any]) -> None:
        raise self._refuse("GroupResult.save")

    def chord_add(self, group_id: str, index: int, meta: Mapping[str, Any],
                  size: int) -> list[dict[str, Any]] | None:
        raise self._refuse("a chord")

    def chord_clear(self, group_id: str) -> None:
        raise self._refuse("a chord")

    def close(self) -> None:
        self._pub.close()
        with self._inboxes_lock:
            inboxes, self._inboxes = self._inboxes, []
        for inbox in inboxes:  # one a thread still waits on is closed with that thread
            if inbox.link.lock.acquire(blocking=False):
                try:
                    inbox.link.close()
                finally:
                    inbox.link.lock.release()
        self._local = threading.local()
