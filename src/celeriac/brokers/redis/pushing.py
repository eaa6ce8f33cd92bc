"""One ready list's publish packed once: the ``LPUSH`` and wake-up token of a plain ``delay()``.

A :class:`Pusher` belongs to one ready list of a queue this broker instance has
declared (:meth:`~.publishing.RedisPublishing.pusher`). It holds the wire bytes
of everything but the message: the ``LPUSH`` command's head, the wake-up token's
``LPUSH`` and its ``LTRIM``. :meth:`Pusher.push` frames the message, writes the
batch in one packet and reads the replies (:meth:`~.direct.Direct.send_packed`):
the same commands, replies and wake-list rule as
:meth:`~.publishing.RedisPublishing.publish_rendered`, with less Python than
redis-py's own ``LPUSH`` call. It makes one attempt, bounded by the publish
deadline; a failure is raised as the broker's one-attempt error for the
caller's retry policy (:func:`celeriac.retry.call`, ``failed=``).
"""

from __future__ import annotations

import time
from os import getpid
from typing import TYPE_CHECKING, Any

from ... import retry
from . import scripts as redis_scripts
from .client import RETRYABLE_ERRORS, where_of
from .direct import pack

if TYPE_CHECKING:
    from .publishing import RedisPublishing

#: seconds a publish leaves the wake-up token out after finding the wake list full
QUIET_WAKE = 0.01


class Pusher:
    """The packed ``LPUSH`` of one ready list (see the module docstring)."""

    __slots__ = ("broker", "head", "token", "trim", "wake", "where")

    def __init__(self, broker: RedisPublishing, key: str, queue: str) -> None:
        self.broker = broker
        name = f"{broker.prefix}{key}".encode()
        self.head = b"*3\r\n$5\r\nLPUSH\r\n$%d\r\n%s\r\n" % (len(name), name)
        self.wake = f"{broker.prefix}_celeriac.wake.{queue}"
        self.token = pack([("LPUSH", self.wake, "1")])
        self.trim = pack([("LTRIM", self.wake, 0, redis_scripts.WAKE_CAP - 1)])
        self.where = where_of(broker.url)  # type: ignore[attr-defined]

    def push(self, data: bytes, bound: float | None) -> None:
        """``LPUSH`` the stored text ``data`` (and the wake-up token) in one attempt whose
        socket waits at most ``bound`` seconds; OperationalError when it failed."""
        broker, wake = self.broker, self.wake
        item = b"%s$%d\r\n%s\r\n" % (self.head, len(data), data)
        quiet = broker._quiet_wake.get(wake)
        now = time.monotonic() if quiet is not None else 0.0
        try:
            conn = broker._conn  # type: ignore[attr-defined]
            direct: Any = (conn if conn is not None and conn[0] == getpid()
                           else broker._connection())[3]
            if quiet is not None and now < quiet:
                direct.send_packed(item, 1, bound)
                return
            if quiet is None:
                replies = direct.send_packed(item + self.token, 2, bound)
            else:
                replies = direct.send_packed(item + self.token + self.trim, 3, bound)
        except RETRYABLE_ERRORS as exc:
            raise retry.attempt_error(self.where, "publish", exc) from exc
        if int(replies[1]) > redis_scripts.WAKE_CAP:
            broker._quiet_wake[wake] = (now or time.monotonic()) + QUIET_WAKE
        elif quiet is not None:
            broker._quiet_wake.pop(wake, None)
