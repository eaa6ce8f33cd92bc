"""The worker's remote-control thread: the pidbox mailbox and the ``worker-*`` events.

One thread per worker node (the prefork supervisor, or the process of the
solo/threads/asyncio pools). It subscribes to the pidbox exchange
(``celery.pidbox``), runs the commands addressed to this node (see
:mod:`.inspection`) and replies in Celery's format (:mod:`celeriac.control.mailbox`),
so ``celery inspect``/``celery control``, Flower and ``celeriac inspect``
work against it. Requests past their ``expires`` header are ignored; a
command that raises replies ``{"error": "<repr>"}``, as Celery does.

It also sends the node's ``worker-online`` event at start, a
``worker-heartbeat`` every :data:`HEARTBEAT_FREQ` seconds (``worker
--heartbeat-interval``; ``0``: no worker events, ``--without-heartbeat``; and when asked by
the ``heartbeat`` command, which event receivers use to wake workers up) and
``worker-offline`` at shutdown. Nothing here can stop the worker: a broker
without a broadcast channel only disables it (logged once); errors while
receiving are retried every second, logged once per streak unless the process
already reported an outage.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
from typing import TYPE_CHECKING, Any

from .. import retry
from ..brokers.base import Subscription
from ..control.mailbox import addressed_to, decode, exchange_names, expired, reply_message
from ..events.dispatcher import EventDispatcher
from ..exceptions import ImproperlyConfigured
from ..version import __version__
from .inspection import HANDLERS, NodeView

if TYPE_CHECKING:
    from ..app.base import Celery

logger = logging.getLogger("celeriac.worker.remote")

HEARTBEAT_FREQ = 2.0


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return [0.0, 0.0, 0.0]


class RemoteControl:
    """Serves pidbox commands and sends worker events for one node."""

    def __init__(self, app: Celery, node: NodeView, *, heartbeat: float = HEARTBEAT_FREQ,
                 control: bool = True) -> None:
        self.app = app
        self.node = node
        #: seconds between ``worker-heartbeat`` events; 0: no worker events at all
        self.heartbeat = float(heartbeat)
        self.freq = self.heartbeat or HEARTBEAT_FREQ
        self.control = control and bool(app.conf.get("worker_enable_remote_control", True))
        self.dispatcher = EventDispatcher(app, hostname=node.hostname, groups=["worker"])
        self.exchange, _ = exchange_names(app.conf.get("control_exchange"))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._beat_now = threading.Event()
        self._seen: dict[str, float] = {}

    # -- life cycle -----------------------------------------------------------------
    def start(self) -> None:
        try:
            channel = self.app.broker.broadcast_channel()
        except ImproperlyConfigured as exc:
            logger.warning("Remote control and worker events disabled: %s", exc)
            return
        subscription = None
        if self.control:
            try:
                subscription = channel.subscribe(self.exchange, [""])
            except Exception as exc:
                logger.warning("Cannot subscribe to %s (remote control disabled): %s",
                               self.exchange, exc)
        self._thread = threading.Thread(target=self._run, args=(subscription,),
                                        name="celeriac-remote", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(5.0)
        self.worker_event("worker-offline")

    def request_heartbeat(self) -> None:
        self._beat_now.set()

    # -- worker events ------------------------------------------------------------------
    def worker_event(self, kind: str) -> None:
        if not self.heartbeat:
            return
        self.dispatcher.send(kind, freq=self.freq, active=self.node.active_count(),
                             processed=self.node.processed(), loadavg=loadavg(),
                             sw_ident="py-celeriac", sw_ver=__version__,
                             sw_sys=platform.system())

    # -- the loop -------------------------------------------------------------------------
    def _run(self, subscription: Subscription | None) -> None:
        self.worker_event("worker-online")
        next_beat = time.monotonic() + self.freq
        failures = 0
        try:
            while not self._stop.is_set():
                if self._beat_now.is_set() or time.monotonic() >= next_beat:
                    self._beat_now.clear()
                    self.worker_event("worker-heartbeat")
                    next_beat = time.monotonic() + self.freq
                wait = max(0.0, min(0.5, next_beat - time.monotonic()))
                if subscription is None:
                    self._stop.wait(wait)
                    continue
                try:
                    messages = subscription.get(wait)
                except Exception as exc:
                    failures += 1
                    self._receiving_failed(exc, failures)
                    self._stop.wait(1.0)
                    continue
                failures = 0
                for message in messages:
                    if expired(message):
                        continue
                    request = decode(message)
                    if request is not None:
                        self.dispatch(request)
        finally:
            if subscription is not None:
                subscription.close()

    @staticmethod
    def _receiving_failed(exc: Exception, failures: int) -> None:
        """Logged once per streak, and not at all during an outage the process already
        reported (see :mod:`.outage`)."""
        if failures == 3 and not retry.failing():
            logger.warning("Remote control: receiving failed (%s); retrying every second",
                           exc)
        else:
            logger.debug("Remote control: receiving failed (%s); retrying", exc)

    def dispatch(self, request: dict[str, Any]) -> None:
        """Run one request if it is for this node, and reply when asked."""
        if not addressed_to(request, self.node.hostname):
            return
        ticket = request.get("ticket")
        if ticket:
            now = time.monotonic()
            if ticket in self._seen:
                return
            self._seen = {t: s for t, s in self._seen.items() if now - s < 300}
            self._seen[str(ticket)] = now
        method = str(request.get("method"))
        arguments = request.get("arguments") or {}
        handler = HANDLERS.get(method)
        if handler is None:
            payload: Any = {"error": f"No such control command: {method}"}
            logger.warning("Received unknown control command %r", method)
        else:
            try:
                payload = handler(self, **(arguments if isinstance(arguments, dict) else {}))
            except Exception as exc:
                logger.exception("Error in control command %s", method)
                payload = {"error": repr(exc)}
        reply = reply_message(request, self.node.hostname, payload)
        if reply is not None and method != "shutdown":
            try:
                self.app.broker.broadcast_channel().send_to_mailbox(reply)
            except Exception as exc:
                logger.warning("Could not reply to %s: %s", method, exc)
        if method == "shutdown":
            logger.warning("Got shutdown from remote")  # Celery's words
            self.node.shutdown()
