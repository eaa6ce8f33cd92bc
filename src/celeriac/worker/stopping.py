"""The prefork supervisor's signals and shutdown steps (mixed into :class:`.supervisor.Supervisor`).

SIGTERM/SIGINT start a warm shutdown (children get SIGTERM: they finish their
running task, give back what they fetched and exit; after
``worker_soft_shutdown_timeout`` it turns cold); a second one, or SIGQUIT, is a
cold shutdown (children get SIGQUIT and give everything back at once; those
still alive :data:`COLD_KILL_AFTER` seconds later are killed); SIGHUP restarts
the children gracefully. Handlers only note the signal and wake the
supervisor's loop, which acts on it in its next tick (see :mod:`.main` for the
meaning of warm and cold).
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from typing import TYPE_CHECKING, Any

from .. import signals
from .children import Child, kill
from .outage import Weather

if TYPE_CHECKING:
    from ..app.base import Celery
    from .main import Worker

logger = logging.getLogger("celeriac.worker")

COLD_KILL_AFTER = 5.0   # seconds a child gets to give back its messages on a cold stop


class Stopping:
    """Signal handling and the warm/cold shutdown of the supervisor's children."""

    worker: Worker
    app: Celery
    children: dict[int, Child]
    state: str
    deadline: float
    cold_at: float
    weather: Weather
    _pending: list[int]
    _wake_w: socket.socket

    def _active(self) -> list[Child]:
        return [c for c in self.children.values() if not c.retiring]

    def _install_signals(self) -> None:
        def note(signum: int, frame: Any) -> None:
            self._pending.append(signum)
            try:
                self._wake_w.send(b"x")
            except OSError:
                pass

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
            signal.signal(sig, note)

    def _handle_signals(self) -> None:
        while self._pending:
            signum = self._pending.pop(0)
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                logger.warning("worker: restarting children (SIGHUP)")
                for child in self._active():
                    child.retiring = True
                    kill(child.process.pid, signal.SIGTERM)
            elif signum == signal.SIGQUIT or self.state != "running":
                self._go_cold(name)
            else:
                self._go_warm(name)

    def _go_warm(self, name: str) -> None:
        logger.warning("worker: Warm shutdown (%s)", name)
        signals.worker_shutting_down.send(sender=self.worker.hostname, sig=name, how="Warm",
                                          exitcode=0)
        self.state = "warm"
        self.deadline = time.time() + float(self.app.conf.worker_soft_shutdown_timeout or 0)
        for child in self.children.values():
            kill(child.process.pid, signal.SIGTERM)

    def _go_cold(self, name: str) -> None:
        if self.state != "cold":
            logger.warning("worker: Cold shutdown (%s)", name)
        self.weather.give_up()
        self.state = "cold"
        self.cold_at = time.time()
        for child in self.children.values():
            kill(child.process.pid, signal.SIGQUIT)

    def _shutdown_step(self, now: float) -> None:
        if self.state == "warm" and now >= self.deadline and self.children:
            logger.warning("Tasks still running after the soft shutdown timeout: giving "
                           "them back")
            self._go_cold("timeout")
        elif self.state == "cold" and now >= self.cold_at + COLD_KILL_AFTER:
            for child in self.children.values():
                kill(child.process.pid, signal.SIGKILL)


