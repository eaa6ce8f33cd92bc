"""``app.control`` and ``app.control.inspect()``: remote control over the pidbox.

:meth:`Control.broadcast` publishes a request (:mod:`.mailbox`) on the
broker's broadcast channel and, with ``reply=True``, opens a reply mailbox
bound with this thread's ``oid`` and collects replies carrying the request's
ticket until ``timeout`` passes or ``limit`` replies came (``limit`` defaults
to the number of destinations). Works with celeriac and Celery workers alike.

Revocation also stays in the result store (see :mod:`celeriac.app.control`):
``revoke`` stores ``REVOKED`` (so workers that are offline or start later
never run the task) *and* broadcasts ``revoke`` (so running workers, Celery's
too, learn it at once and ``terminate=True`` stops the task now).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .mailbox import decode, exchange_names, request_message

if TYPE_CHECKING:
    from ..app.base import Celery

Reply = dict[str, Any]


def flatten_reply(replies: list[Reply]) -> dict[str, Any]:
    """``[{node: payload}, ...]`` -> ``{node: payload}``."""
    out: dict[str, Any] = {}
    for item in replies:
        out.update(item)
    return out


class Broadcaster:
    """Sends pidbox requests and gathers replies for one app."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def broadcast(self, command: str, arguments: dict[str, Any] | None = None,
                  destination: Iterable[str] | str | None = None, connection: Any = None,
                  reply: bool = False, timeout: float = 1.0, limit: int | None = None,
                  callback: Callable[[Reply], Any] | None = None, channel: Any = None,
                  pattern: str | None = None, matcher: str | None = None,
                  **extra_kwargs: Any) -> list[Reply] | None:
        """Send ``command`` to the workers (all, or ``destination``); with ``reply``,
        return their replies as ``[{node: payload}, ...]``."""
        if isinstance(destination, str):
            destination = [destination]
        dest = list(destination) if destination else None
        if dest and limit is None:
            limit = len(dest)
        args = dict(arguments or {}, **extra_kwargs)
        exchange, reply_exchange = exchange_names(self.app.conf.get("control_exchange"))
        broadcast = self.app.broker.broadcast_channel()
        if not reply:
            message, _ = request_message(exchange, command, args, dest, timeout=timeout,
                                         pattern=pattern, matcher=matcher)
            broadcast.publish(message)
            return None
        oid = self.app.thread_oid
        with broadcast.open_mailbox(reply_exchange, oid) as box:
            message, ticket = request_message(exchange, command, args, dest,
                                              reply_exchange=reply_exchange, oid=oid,
                                              timeout=timeout, pattern=pattern,
                                              matcher=matcher)
            broadcast.publish(message)
            return self._collect(box, ticket, timeout, limit, callback)

    @staticmethod
    def _collect(box: Any, ticket: str | None, timeout: float, limit: int | None,
                 callback: Callable[[Reply], Any] | None) -> list[Reply]:
        replies: list[Reply] = []
        deadline = time.monotonic() + timeout
        while limit is None or len(replies) < limit:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for message in box.get(min(left, 1.0)):
                if message.headers.get("ticket") != ticket:
                    continue
                body = decode(message)
                if body is None:
                    continue
                replies.append(body)
                if callback is not None:
                    callback(body)
        return replies


class Inspect:
    """``app.control.inspect(destination=None, timeout=1.0, ...)``: read-only queries."""

    def __init__(self, destination: Iterable[str] | str | None = None, timeout: float = 1.0,
                 callback: Callable[[Reply], Any] | None = None, connection: Any = None,
                 app: Celery | None = None, limit: int | None = None,
                 pattern: str | None = None, matcher: str | None = None) -> None:
        assert app is not None, "Inspect needs an app (use app.control.inspect())"
        self.app = app
        self.destination = destination
        self.timeout = timeout
        self.callback = callback
        self.limit = limit
        self.pattern, self.matcher = pattern, matcher

    def _prepare(self, replies: list[Reply] | None) -> Any:
        if not replies:
            return None
        by_node = flatten_reply(replies)
        if self.destination and isinstance(self.destination, str):
            return by_node.get(self.destination)
        return by_node

    def _request(self, command: str, **kwargs: Any) -> Any:
        return self._prepare(self.app.control.broadcast(
            command, arguments=kwargs, destination=self.destination, reply=True,
            timeout=self.timeout, limit=self.limit, callback=self.callback,
            pattern=self.pattern, matcher=self.matcher))

    def report(self) -> Any:
        return self._request("report")

    def clock(self) -> Any:
        return self._request("clock")

    def active(self, safe: bool | None = None) -> Any:
        return self._request("active")

    def scheduled(self, safe: bool | None = None) -> Any:
        return self._request("scheduled")

    def reserved(self, safe: bool | None = None) -> Any:
        return self._request("reserved")

    def stats(self) -> Any:
        return self._request("stats")

    def revoked(self) -> Any:
        return self._request("revoked")

    def registered(self, *taskinfoitems: str) -> Any:
        return self._request("registered", taskinfoitems=list(taskinfoitems))

    registered_tasks = registered

    def ping(self, destination: Any = None) -> Any:
        return self._request("ping")

    def active_queues(self) -> Any:
        return self._request("active_queues")

    def query_task(self, *ids: Any) -> Any:
        if len(ids) == 1 and isinstance(ids[0], (list, tuple)):
            ids = tuple(ids[0])
        return self._request("query_task", ids=list(ids))

    def conf(self, with_defaults: bool = False) -> Any:
        return self._request("conf", with_defaults=with_defaults)

    def memsample(self) -> Any:
        """Each node's current RSS, as Celery's human string (``"52.316MB"``), recorded for
        :meth:`memdump` (see :mod:`celeriac.worker.memory`)."""
        return self._request("memsample")

    def memdump(self, samples: int = 10) -> Any:
        """Each node's report of its recorded ``memsample`` values and its RSS after a
        garbage collection."""
        return self._request("memdump", samples=samples)

    def objgraph(self, type: str = "Request", n: int = 200, max_depth: int = 10) -> Any:
        """Each node draws the back references of up to ``n`` objects of class ``type``:
        ``{"filename": path}`` on the node's machine (needs objgraph there)."""
        return self._request("objgraph", num=n, max_depth=max_depth, type=type)

    def hello(self, from_node: str, revoked: Any = None) -> Any:
        return self._request("hello", from_node=from_node, revoked=revoked)
