"""Receiving events: :class:`EventReceiver` (``app.events.Receiver``), as Celery's.

``EventReceiver(app, handlers={"task-succeeded": fn, "*": catch_all})``
subscribes to the ``celeryev`` exchange (``routing_key="#"``: everything)
and calls the handler of each event's type (or ``"*"``) with the event dict;
``task.multi`` lists are split into their events. ``capture(limit=,
timeout=, wakeup=True)`` runs until ``limit`` events, ``timeout`` seconds
without events, or ``should_stop``; ``wakeup`` first asks every worker for a
heartbeat so they show up at once. Each event's ``local_received`` is the
time it was received here, and the Lamport clock is adjusted by it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..brokers.base import Broadcast, Subscription
from .event import EXCHANGE, clock

if TYPE_CHECKING:
    from ..app.base import Celery

logger = logging.getLogger("celeriac.events")

Handler = Callable[[dict[str, Any]], Any]


def decode(message: Broadcast) -> list[dict[str, Any]]:
    """The events in one message (a JSON object, or a list of them); [] if malformed."""
    try:
        body = json.loads(message.body)
    except ValueError:
        logger.warning("Dropping an event that is not JSON (%s)", message.routing_key)
        return []
    items = body if isinstance(body, list) else [body]
    return [e for e in items if isinstance(e, dict) and isinstance(e.get("type"), str)]


class EventReceiver:
    """Calls handlers for the events published on the app's broker."""

    def __init__(self, app: Celery, handlers: Mapping[str, Handler] | None = None,
                 routing_key: str = "#", node_id: str | None = None,
                 queue_prefix: str | None = None, accept: Any = None, **_: Any) -> None:
        self.app = app
        self.handlers = dict(handlers or {})
        self.routing_key = routing_key
        self.node_id = node_id
        self.should_stop = False
        self.exchange = str(app.conf.get("event_exchange") or EXCHANGE)
        self._subscription: Subscription | None = None

    def process(self, type: str, event: dict[str, Any]) -> None:
        handler = self.handlers.get(type) or self.handlers.get("*")
        if handler is not None:
            handler(event)

    def _open(self) -> Subscription:
        if self._subscription is None:
            channel = self.app.broker.broadcast_channel()
            self._subscription = channel.subscribe(self.exchange, [self.routing_key])
        return self._subscription

    def itercapture(self, limit: int | None = None, timeout: float | None = None,
                    wakeup: bool = True) -> Iterator[dict[str, Any]]:
        """Yield events as they come (see :meth:`capture`)."""
        sub = self._open()
        if wakeup:
            self.wakeup_workers()
        count = 0
        last = time.monotonic()
        try:
            while not self.should_stop:
                wait = 1.0 if timeout is None else max(0.0, min(1.0, last + timeout
                                                                - time.monotonic()))
                messages = sub.get(wait)
                if not messages:
                    if timeout is not None and time.monotonic() - last >= timeout:
                        return
                    continue
                last = time.monotonic()
                for message in messages:
                    for event in decode(message):
                        event["local_received"] = time.time()
                        if isinstance(event.get("clock"), int):
                            clock.adjust(event["clock"])
                        yield event
                        count += 1
                        if limit is not None and count >= limit:
                            return
        finally:
            self.close()

    def capture(self, limit: int | None = None, timeout: float | None = None,
                wakeup: bool = True) -> None:
        """Receive and handle events until ``limit``, a quiet ``timeout`` or ``should_stop``."""
        for event in self.itercapture(limit=limit, timeout=timeout, wakeup=wakeup):
            self.process(event["type"], event)

    def wakeup_workers(self) -> None:
        """Ask every worker for a heartbeat now (Celery's ``heartbeat`` broadcast)."""
        try:
            self.app.control.broadcast("heartbeat")
        except Exception as exc:
            logger.debug("wakeup broadcast failed: %s", exc)

    def close(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None

    def __enter__(self) -> EventReceiver:
        self._open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
