"""Fan-out messages and reply mailboxes: the broadcast half of the broker interface.

Broadcast (monitoring events and remote control, see docs/monitoring.md, "For
broker authors"): :meth:`Broker.broadcast_channel` returns a
:class:`BroadcastChannel`, kombu's fan-out and reply model reduced to four calls:

* ``publish(Broadcast)`` fans a message out to every subscription of its
  ``exchange`` whose pattern matches its ``routing_key`` (AMQP topic rules:
  ``*`` one word, ``#`` zero or more; an empty pattern matches only an empty
  key, ``#`` every key). Delivery is transient and best-effort: only
  subscriptions open at publish time get it, nothing is stored for later.
* ``subscribe(exchange, patterns)`` opens a :class:`Subscription`; its
  ``get(timeout)`` returns what arrived (waiting up to ``timeout`` seconds for
  the first), in publish order per publisher; ``close()`` ends it.
* ``open_mailbox(exchange, routing_key)`` declares a private reply queue bound
  to a *direct* exchange with ``routing_key`` (pidbox replies:
  ``reply.celery.pidbox`` and the client's ``oid``); ``send_to_mailbox``
  delivers a :class:`Broadcast` to the mailboxes bound with its routing key
  (False when none is: the client is gone). Mailbox messages wait until read
  or until the mailbox is closed (``close()`` deletes it).

Celery's names are used as they are: events go to the ``celeryev`` exchange
with routing keys such as ``task.multi`` and ``worker.heartbeat``; control
requests to ``celery.pidbox`` with an empty routing key; replies to
``reply.celery.pidbox`` with the client's ``oid``. A broker that speaks
Celery's wire format maps them to what kombu does on it (Redis: ``PUBLISH``
on ``/<db>.<exchange>/<routing key>`` and ``LPUSH`` to ``<oid>.reply.celery.pidbox``;
AMQP: exchanges and queues), so real Celery workers, ``celery events`` and
Flower see celeriac's messages and the other way round.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Broadcast:
    """One message on a fan-out exchange or in a reply mailbox (events, pidbox).

    ``body`` is the serialized payload (JSON for events and pidbox), ``headers``
    the kombu message headers (``hostname`` for events; ``clock``/``expires`` for
    control requests; ``ticket``/``clock`` for replies); ``persistent`` is AMQP's
    ``delivery_mode`` 2 (Celery sends pidbox requests persistent, events and
    replies transient)."""

    exchange: str
    routing_key: str
    body: bytes
    headers: Mapping[str, Any] = field(default_factory=dict)
    content_type: str = "application/json"
    content_encoding: str = "utf-8"
    persistent: bool = False


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: words split by ``.``, ``*`` is one word, ``#`` zero or more."""
    if pattern == "#":
        return True

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        if not k:
            return False
        return (p[0] == "*" or p[0] == k[0]) and match(p[1:], k[1:])

    return match(pattern.split(".") if pattern else [],
                 key.split(".") if key else [])


class Subscription(abc.ABC):
    """An open subscription or mailbox; use as a context manager or ``close()`` it."""

    @abc.abstractmethod
    def get(self, timeout: float = 1.0) -> list[Broadcast]:
        """What arrived since the last call, waiting up to ``timeout`` for the first."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop receiving (a mailbox is deleted with what it still holds)."""

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class BroadcastChannel(abc.ABC):
    """Fan-out publishing, subscriptions and reply mailboxes (see the module docstring)."""

    @abc.abstractmethod
    def publish(self, message: Broadcast) -> None:
        """Deliver to every open subscription of ``message.exchange`` that matches."""

    @abc.abstractmethod
    def subscribe(self, exchange: str, patterns: Sequence[str] = ("#",)) -> Subscription:
        """Receive what is published to ``exchange`` with a key matching a pattern."""

    @abc.abstractmethod
    def open_mailbox(self, exchange: str, routing_key: str) -> Subscription:
        """Declare a reply queue bound to the direct ``exchange`` with ``routing_key``."""

    @abc.abstractmethod
    def send_to_mailbox(self, message: Broadcast) -> bool:
        """Queue ``message`` in the mailboxes bound with its routing key; False if none."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections held for broadcasting."""
