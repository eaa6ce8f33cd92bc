"""Monitoring events, Celery's event protocol on every broker (see docs/monitoring.md).

:mod:`.event` (the format, the Lamport clock), :mod:`.dispatcher` (sending),
:mod:`.receiver` (receiving), :mod:`.state` (the cluster as events describe
it). ``app.events`` is an :class:`Events`: ``app.events.Dispatcher``,
``app.events.Receiver``, ``app.events.State`` and
``app.events.default_dispatcher()``, as in Celery.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .dispatcher import EventDispatcher
from .event import EXCHANGE, Event, LamportClock, clock, group_of, routing_key
from .receiver import EventReceiver
from .state import State

if TYPE_CHECKING:
    from ..app.base import Celery

__all__ = ["EXCHANGE", "Event", "EventDispatcher", "EventReceiver", "Events",
           "LamportClock", "State", "clock", "group_of", "routing_key"]


class Events:
    """``app.events``: the event classes bound to one app."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def Dispatcher(self, connection: Any = None, hostname: str | None = None,
                   enabled: bool = True, groups: Any = None, **kwargs: Any) -> EventDispatcher:
        return EventDispatcher(self.app, hostname=hostname, enabled=enabled, groups=groups)

    def Receiver(self, connection: Any = None, handlers: Any = None, routing_key: str = "#",
                 node_id: str | None = None, **kwargs: Any) -> EventReceiver:
        return EventReceiver(self.app, handlers=handlers, routing_key=routing_key,
                             node_id=node_id, **kwargs)

    def State(self, **kwargs: Any) -> State:
        return State(**kwargs)

    @contextlib.contextmanager
    def default_dispatcher(self, hostname: str | None = None, enabled: bool = True,
                           **kwargs: Any) -> Iterator[EventDispatcher]:
        dispatcher = self.Dispatcher(hostname=hostname, enabled=enabled)
        try:
            yield dispatcher
        finally:
            dispatcher.close()
