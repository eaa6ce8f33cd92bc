"""``app.control``: remote control of workers, and revocations that survive restarts.

The commands go over the broker's broadcast channel in Celery's pidbox format
(:mod:`celeriac.control`), so they reach celeriac and Celery workers alike:
``app.control.inspect()`` queries, and ``revoke``, ``rate_limit``,
``time_limit``, ``add_consumer``/``cancel_consumer``, ``pool_grow``/
``pool_shrink``, ``autoscale``, ``enable_events``/``disable_events``,
``pool_restart``, ``shutdown``, ``heartbeat``, ``ping`` and ``broadcast``.

``revoke`` also records ``REVOKED`` for the task id in the result store
(Celery 5.6.2+ does the same write): every celeriac worker checks it before
running a message, so a revoked task never runs even if no worker was online
when it was revoked. With ``terminate=True`` the meta also carries the signal
(``"terminate": "SIGTERM"``): workers poll the revocations of the tasks they
run and stop them (see :mod:`celeriac.worker.revocation`); the broadcast
reaches running workers at once. The result store refuses any later write
over ``REVOKED``, so a task that still finishes cannot overwrite it.
"""

from __future__ import annotations

import logging
import signal as signal_module
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .. import states
from ..control.client import Broadcaster, Inspect
from ..exceptions import ImproperlyConfigured, TaskRevokedError
from ..results.meta import store_result

if TYPE_CHECKING:
    from .base import Celery

logger = logging.getLogger("celeriac.control")


def signal_number(value: Any) -> int:
    """A signal given as a name (``"SIGKILL"``, ``"KILL"``), a number or None (SIGTERM)."""
    if value is None or value == "":
        return int(signal_module.SIGTERM)
    if isinstance(value, int):
        try:
            return int(signal_module.Signals(value))
        except ValueError:
            raise ValueError(f"unknown signal {value!r}") from None
    name = str(value).upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return int(signal_module.Signals[name])
    except KeyError:
        raise ValueError(f"unknown signal {value!r}") from None


def _broadcast_available(app: Celery) -> bool:
    try:
        app.broker.broadcast_channel()
    except ImproperlyConfigured:
        return False
    return True


class Control(Broadcaster):
    """``app.control``."""

    def inspect(self, destination: Any = None, timeout: float = 1.0, callback: Any = None,
                connection: Any = None, app: Any = None, limit: int | None = None,
                pattern: str | None = None, matcher: str | None = None) -> Inspect:
        return Inspect(destination=destination, timeout=timeout, callback=callback,
                       app=self.app, limit=limit, pattern=pattern, matcher=matcher)

    def revoke(self, task_id: str | Iterable[str], destination: Any = None,
               terminate: bool = False, signal: Any = None, **kwargs: Any) -> Any:
        """Revoke tasks: never run them, and with ``terminate`` stop them if they run
        (``signal``: a name or number, default SIGTERM)."""
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        signame = signal_module.Signals(signal_number(signal)).name
        channel = _broadcast_available(self.app)
        if self.app.backend is None and not channel:
            raise ImproperlyConfigured("revoke() needs a result backend to record revocations")
        if self.app.backend is not None:
            extra = {"terminate": signame} if terminate else None
            for tid in ids:
                store_result(self.app, tid, TaskRevokedError("revoked"), states.REVOKED,
                             extra=extra)
        if not channel:
            return None
        arguments: dict[str, Any] = {"task_id": ids}
        if terminate:
            arguments.update(terminate=True, signal=signame)
        return self.broadcast("revoke", destination=destination, arguments=arguments,
                              **kwargs)

    def terminate(self, task_id: str | Iterable[str], destination: Any = None,
                  signal: Any = "SIGTERM", **kwargs: Any) -> Any:
        return self.revoke(task_id, destination=destination, terminate=True, signal=signal,
                           **kwargs)

    def ping(self, destination: Any = None, timeout: float = 1.0, **kwargs: Any) -> Any:
        return self.broadcast("ping", reply=True, arguments={}, destination=destination,
                              timeout=timeout, **kwargs)

    def rate_limit(self, task_name: str, rate_limit: Any, destination: Any = None,
                   **kwargs: Any) -> Any:
        return self.broadcast("rate_limit", destination=destination,
                              arguments={"task_name": task_name, "rate_limit": rate_limit},
                              **kwargs)

    def time_limit(self, task_name: str, soft: float | None = None, hard: float | None = None,
                   destination: Any = None, **kwargs: Any) -> Any:
        return self.broadcast("time_limit", arguments={"task_name": task_name, "hard": hard,
                                                       "soft": soft},
                              destination=destination, **kwargs)

    def add_consumer(self, queue: str, exchange: str | None = None,
                     exchange_type: str = "direct", routing_key: str | None = None,
                     options: dict[str, Any] | None = None, destination: Any = None,
                     **kwargs: Any) -> Any:
        return self.broadcast("add_consumer", destination=destination,
                              arguments=dict({"queue": queue, "exchange": exchange,
                                              "exchange_type": exchange_type,
                                              "routing_key": routing_key}, **(options or {})),
                              **kwargs)

    def cancel_consumer(self, queue: str, destination: Any = None, **kwargs: Any) -> Any:
        return self.broadcast("cancel_consumer", destination=destination,
                              arguments={"queue": queue}, **kwargs)

    def enable_events(self, destination: Any = None, **kwargs: Any) -> Any:
        return self.broadcast("enable_events", arguments={}, destination=destination,
                              **kwargs)

    def disable_events(self, destination: Any = None, **kwargs: Any) -> Any:
        return self.broadcast("disable_events", arguments={}, destination=destination,
                              **kwargs)

    def pool_grow(self, n: int = 1, destination: Any = None, **kwargs: Any) -> Any:
        return self.broadcast("pool_grow", arguments={"n": n}, destination=destination,
                              **kwargs)

    def pool_shrink(self, n: int = 1, destination: Any = None, **kwargs: Any) -> Any:
        return self.broadcast("pool_shrink", arguments={"n": n}, destination=destination,
                              **kwargs)

    def autoscale(self, max: int, min: int, destination: Any = None, **kwargs: Any) -> Any:
        return self.broadcast("autoscale", arguments={"max": max, "min": min},
                              destination=destination, **kwargs)

    def pool_restart(self, modules: Any = None, reload: bool = False, reloader: Any = None,
                     destination: Any = None, **kwargs: Any) -> Any:
        return self.broadcast("pool_restart", arguments={"modules": modules,
                                                         "reload": reload,
                                                         "reloader": reloader},
                              destination=destination, **kwargs)

    def shutdown(self, destination: Any = None, **kwargs: Any) -> Any:
        return self.broadcast("shutdown", arguments={}, destination=destination, **kwargs)

    def heartbeat(self, destination: Any = None, **kwargs: Any) -> Any:
        return self.broadcast("heartbeat", arguments={}, destination=destination, **kwargs)

    def election(self, id: str, topic: str, action: Any = None, connection: Any = None) -> None:
        """Refused: Celery's workers elect one of them over their gossip of events, which
        celeriac workers do not take part in (docs/monitoring.md, "election is refused")."""
        raise NotImplementedError(
            "app.control.election() is not supported: Celery elects a worker over the gossip "
            "of worker-elect events between workers, which celeriac workers do not take part "
            "in; send the task with apply_async()")

    def purge(self) -> int:
        return self.app.broker.purge(self.app.conf.task_default_queue)

    discard_all = purge
