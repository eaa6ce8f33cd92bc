"""Signals with Celery's names: ``task_prerun``, ``worker_ready``, ``on_after_configure``...

A :class:`Signal` keeps weak-free, ordered receivers; ``connect`` works as a
decorator with or without arguments (``sender=`` filters by sender, as in
Celery). Receivers are called with ``sender=`` and keyword arguments; an
exception in one receiver is logged and does not stop the others.

Every signal here is sent where Celery sends it (see docs/differences.md for
the senders that differ), except the eventlet pool's, which warn when connected.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

Receiver = Callable[..., Any]


class Signal:
    """A named hook other code can connect to."""

    def __init__(self, name: str = "", providing_args: Any = None) -> None:
        self.name = name
        self._receivers: list[tuple[Receiver, Any]] = []

    def connect(self, receiver: Receiver | None = None, *, sender: Any = None,
                weak: bool = False, dispatch_uid: Any = None) -> Any:
        def register(fn: Receiver) -> Receiver:
            if all(r is not fn for r, _ in self._receivers):
                self._receivers.append((fn, sender))
            return fn

        return register(receiver) if receiver is not None else register

    def disconnect(self, receiver: Receiver, sender: Any = None) -> None:
        self._receivers = [(r, s) for r, s in self._receivers if r is not receiver]

    def send(self, sender: Any = None, **named: Any) -> list[tuple[Receiver, Any]]:
        if not self._receivers:  # the usual case for the per-task signals: nothing to do
            return []
        responses = []
        for receiver, wanted in list(self._receivers):
            if not _matches(wanted, sender):
                continue
            try:
                responses.append((receiver, receiver(sender=sender, signal=self, **named)))
            except Exception as exc:  # as Celery: logged, returned, the others still run
                logger.exception("Signal %s receiver %r raised", self.name, receiver)
                responses.append((receiver, exc))
        return responses

    send_robust = send

    @property
    def receivers(self) -> list[Receiver]:
        return [r for r, _ in self._receivers]

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"


def _matches(wanted: Any, sender: Any) -> bool:
    """``connect(sender=...)`` filter: the same object, or an equal name (task names)."""
    if wanted is None or wanted is sender:
        return True
    return isinstance(wanted, str) and wanted == sender


before_task_publish = Signal("before_task_publish")
after_task_publish = Signal("after_task_publish")
task_received = Signal("task_received")
task_prerun = Signal("task_prerun")
task_postrun = Signal("task_postrun")
task_success = Signal("task_success")
task_retry = Signal("task_retry")
task_failure = Signal("task_failure")
task_revoked = Signal("task_revoked")
task_rejected = Signal("task_rejected")
task_unknown = Signal("task_unknown")
task_internal_error = Signal("task_internal_error")
celeryd_init = Signal("celeryd_init")
celeryd_after_setup = Signal("celeryd_after_setup")
import_modules = Signal("import_modules")
worker_init = Signal("worker_init")
worker_process_init = Signal("worker_process_init")
worker_process_shutdown = Signal("worker_process_shutdown")
worker_ready = Signal("worker_ready")
worker_shutting_down = Signal("worker_shutting_down")
worker_shutdown = Signal("worker_shutdown")
heartbeat_sent = Signal("heartbeat_sent")
setup_logging = Signal("setup_logging")
after_setup_logger = Signal("after_setup_logger")
after_setup_task_logger = Signal("after_setup_task_logger")
beat_init = Signal("beat_init")
beat_embedded_init = Signal("beat_embedded_init")
#: sent by every ``celeriac`` command with the values of the app's
#: ``user_options["preload"]`` options (``app=``, ``options=``), before the command runs
user_preload_options = Signal("user_preload_options")
worker_before_create_process = Signal("worker_before_create_process")


class NeverSent(Signal):
    """A Celery signal celeriac has no occasion to send (its eventlet pool's): importing
    it works, connecting a receiver warns once, naming it."""

    def connect(self, receiver: Receiver | None = None, **options: Any) -> Any:
        if not self._receivers:
            warnings.warn(f"signal {self.name} is never sent by celeriac (it has no eventlet "
                          "pool); the receiver will not be called", UserWarning, stacklevel=2)
        return super().connect(receiver, **options)


eventlet_pool_started = NeverSent("eventlet_pool_started")
eventlet_pool_preshutdown = NeverSent("eventlet_pool_preshutdown")
eventlet_pool_postshutdown = NeverSent("eventlet_pool_postshutdown")
eventlet_pool_apply = NeverSent("eventlet_pool_apply")
