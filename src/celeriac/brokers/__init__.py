"""Brokers and the storage engines behind them.

:mod:`.base` is the broker interface every engine implements;
:mod:`.registry` is the table of URL schemes; each engine is a package
(:mod:`.memory`, :mod:`.sqlite`, :mod:`.redis`) holding its broker, result
store and schedule store. Nothing here knows about tasks: brokers store and
lease opaque :class:`~celeriac.messages.Message` objects.
"""

from __future__ import annotations

from .base import Broker, Capabilities, DeadLetter, Delivery, Publish, QueueStats
from .registry import broker_for_url, scheme_of

__all__ = ["Broker", "Capabilities", "DeadLetter", "Delivery", "Publish", "QueueStats",
           "broker_for_url", "scheme_of"]
