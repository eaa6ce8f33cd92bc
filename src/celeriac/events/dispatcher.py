"""Sending events: :class:`EventDispatcher` (``app.events.Dispatcher``).

Events are best effort, as in Celery: a send that fails (broker down, no
broadcast channel) is logged once per minute and dropped; it never fails the
task or the worker. ``groups`` limits what is sent (the worker sends the
``worker`` group always, and the ``task`` group only with ``-E`` /
``worker_send_task_events``); ``enabled=False`` sends nothing.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .. import retry
from ..brokers.base import Broadcast, BroadcastChannel
from .event import EXCHANGE, group_of, routing_key, stamp

if TYPE_CHECKING:
    from ..app.base import Celery

logger = logging.getLogger("celeriac.events")

WARN_EVERY = 60.0


def client_hostname() -> str:
    """A producer's event hostname, Celery's ``gen<pid>@<host>``."""
    import os

    return f"gen{os.getpid()}@{socket.gethostname()}"


class EventDispatcher:
    """Publishes events to the ``celeryev`` exchange of the app's broker."""

    def __init__(self, app: Celery, hostname: str | None = None, enabled: bool = True,
                 groups: Iterable[str] | None = None, pid: int | None = None,
                 channel: BroadcastChannel | None = None) -> None:
        self.app = app
        self.hostname = hostname or client_hostname()
        self.enabled = enabled
        self.groups = set(groups) if groups is not None else None
        self.pid = pid
        self._channel = channel
        self._warned = 0.0
        self.exchange = str(app.conf.get("event_exchange") or EXCHANGE)

    @property
    def channel(self) -> BroadcastChannel:
        if self._channel is None:
            self._channel = self.app.broker.broadcast_channel()
        return self._channel

    def wants(self, event_type: str) -> bool:
        return self.enabled and (self.groups is None or group_of(event_type) in self.groups)

    def send(self, type: str, blind: bool = False, **fields: Any) -> dict[str, Any] | None:
        """Publish one event of ``type``; returns it (None when not sent)."""
        if not self.wants(type):
            return None
        event = stamp(type, self.hostname, fields, self.pid)
        self.publish(routing_key(type), event)
        return event

    def send_many(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Publish several task events as one ``task.multi`` message (a JSON list)."""
        wanted = [stamp(t, self.hostname, f, self.pid) for t, f in events if self.wants(t)]
        if len(wanted) == 1:
            self.publish(routing_key(wanted[0]["type"]), wanted[0])
        elif wanted:
            self.publish("task.multi", wanted)

    def publish(self, key: str, body: Any) -> None:
        message = Broadcast(exchange=self.exchange, routing_key=key,
                            body=json.dumps(body, default=str).encode("utf-8"),
                            headers={"hostname": self.hostname})
        try:
            self.channel.publish(message)
        except Exception as exc:
            now = time.monotonic()
            if retry.failing():  # an outage this process reported already (one line)
                logger.debug("Could not send event %s: %s", key, exc)
            elif now - self._warned >= WARN_EVERY:
                self._warned = now
                logger.warning("Could not send event %s: %s", key, exc)

    def close(self) -> None:
        self.enabled = False


def send_task_sent(app: Celery, items: Iterable[Any]) -> None:
    """``task-sent`` for each published :class:`~celeriac.brokers.base.Publish`
    (``task_send_sent_event``), from this process's producer dispatcher."""
    dispatcher = getattr(app, "_sent_dispatcher", None)
    if dispatcher is None or dispatcher.hostname != client_hostname():
        dispatcher = EventDispatcher(app)
        app._sent_dispatcher = dispatcher  # type: ignore[attr-defined]
    for item in items:
        headers = item.message.headers if isinstance(item.message.headers, dict) else {}
        dispatcher.send("task-sent", uuid=headers.get("id"), root_id=headers.get("root_id"),
                        parent_id=headers.get("parent_id"), name=headers.get("task"),
                        args=headers.get("argsrepr"), kwargs=headers.get("kwargsrepr"),
                        retries=headers.get("retries", 0), eta=headers.get("eta"),
                        expires=headers.get("expires"), queue=item.queue, exchange="",
                        routing_key=item.queue)
