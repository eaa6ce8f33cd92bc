"""The memory broker's broadcast channel: fan-out and reply mailboxes inside one process.

Subscriptions and mailboxes are in-memory queues of one
:class:`MemoryBroadcast` (one per broker instance): ``publish`` appends the
message to every open subscription whose exchange and pattern match, and
``send_to_mailbox`` to every mailbox bound with the routing key. Like the
memory broker itself, it reaches only threads of the same process.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence

from ..base import Broadcast, BroadcastChannel, Subscription, topic_matches


class _Queue(Subscription):
    def __init__(self, hub: MemoryBroadcast, exchange: str, patterns: Sequence[str],
                 mailbox_key: str | None = None) -> None:
        self.hub, self.exchange, self.patterns = hub, exchange, list(patterns)
        self.mailbox_key = mailbox_key
        self.items: collections.deque[Broadcast] = collections.deque()
        self.closed = False

    def wants(self, message: Broadcast) -> bool:
        if self.closed or message.exchange != self.exchange:
            return False
        if self.mailbox_key is not None:
            return message.routing_key == self.mailbox_key
        return any(topic_matches(p, message.routing_key) for p in self.patterns)

    def get(self, timeout: float = 1.0) -> list[Broadcast]:
        deadline = time.monotonic() + max(0.0, timeout)
        with self.hub.changed:
            while not self.items and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.hub.changed.wait(left)
            out = list(self.items)
            self.items.clear()
            return out

    def close(self) -> None:
        with self.hub.changed:
            self.closed = True
            self.items.clear()
            self.hub.forget(self)
            self.hub.changed.notify_all()


class MemoryBroadcast(BroadcastChannel):
    """Fan-out between threads of this process."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self._subscriptions: list[_Queue] = []
        self._mailboxes: list[_Queue] = []

    def forget(self, queue: _Queue) -> None:
        for group in (self._subscriptions, self._mailboxes):
            if queue in group:
                group.remove(queue)

    def publish(self, message: Broadcast) -> None:
        with self.changed:
            for sub in self._subscriptions:
                if sub.wants(message):
                    sub.items.append(message)
            self.changed.notify_all()

    def subscribe(self, exchange: str, patterns: Sequence[str] = ("#",)) -> Subscription:
        sub = _Queue(self, exchange, patterns)
        with self.changed:
            self._subscriptions.append(sub)
        return sub

    def open_mailbox(self, exchange: str, routing_key: str) -> Subscription:
        box = _Queue(self, exchange, (), mailbox_key=routing_key)
        with self.changed:
            self._mailboxes.append(box)
        return box

    def send_to_mailbox(self, message: Broadcast) -> bool:
        with self.changed:
            targets = [box for box in self._mailboxes if box.wants(message)]
            for box in targets:
                box.items.append(message)
            self.changed.notify_all()
        return bool(targets)
