"""Revocation on the worker side: which ids are revoked, and terminating running ones.

``revoke()`` (:mod:`celeriac.app.control`) stores ``REVOKED`` for the task id
in the result store, with the signal when ``terminate=True``
(``{"terminate": "SIGTERM"}`` in the meta). Workers read it:

* when a batch is received (one read for the batch) and again right before a
  job starts if it waited since for longer than :data:`RECHECK_AFTER` (a
  prefetched job, dispatched in a later turn of the consumer loop, or behind a
  job on the consumer's thread; one read for the waiting jobs expected to start
  before the next recheck, :func:`to_recheck`), so a task revoked while it
  waited never runs;
* every :data:`POLL_INTERVAL` seconds for the tasks running now, so
  ``terminate=True`` reaches a running task (prefork: the supervisor signals
  the child, which is replaced; asyncio: the task is cancelled; threads and
  solo cannot stop a thread and log a warning: the task runs to its end and,
  by the result store's REVOKED rule, its result is not stored).

:class:`Revocations` also remembers ids it was told about directly: the
worker-side entry point is :meth:`celeriac.worker.main.Worker.revoke`
(``revoke(ids, terminate=False, signal=None)``), which a remote-control
channel calls; it lands here and in the pool or supervisor. A consumer's side of
it (direct revokes, terminating its running jobs) is :class:`RevokingConsumer`.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import signal as signal_module
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .. import retry, states
from ..app.control import signal_number
from ..exceptions import DecodeError, OperationalError
from ..results.store import decode_task_meta
from .outage import QUICK_CALL

if TYPE_CHECKING:
    from ..app.base import Celery
    from ..brokers.base import Delivery

logger = logging.getLogger("celeriac.worker")

#: seconds between two reads of the revocations of running tasks
POLL_INTERVAL = 1.0
#: a job that waited is checked again before it starts if its last check is older
#: (a drain of tiny prefetched tasks reads once per this interval, not once per task)
RECHECK_AFTER = 0.005
#: ids remembered from direct revoke() calls (oldest forgotten first)
REMEMBERED = 10_000


def to_recheck(waiting: Iterable[Any], now: float, expected: float | None,
               slots: int) -> list[Any]:
    """The jobs a recheck reads, of ``waiting`` (buffered jobs with ``checked_at``, in start
    order): those whose last check is older than :data:`RECHECK_AFTER` among the ones
    expected to start before the next recheck could be due (``expected``: seconds per
    task, None: unknown, all of them). A job further back is read when it nears the
    front, so every job is still checked at most RECHECK_AFTER before it starts, and a
    drain of tiny tasks reads a few ids per recheck instead of its whole buffer."""
    jobs = list(waiting)
    if expected is not None and expected > 0:
        jobs = jobs[:max(1, slots) * (int(RECHECK_AFTER / expected) + 2)]
    return [job for job in jobs if now - job.checked_at > RECHECK_AFTER]


def read_revoked(app: Celery, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The REVOKED metas among ``ids`` (one batched read; a malformed meta counts as not
    revoked; a store that cannot be read revokes nothing, logged)."""
    backend = app.backend
    if backend is None or not ids:
        return {}
    try:
        try:
            metas = backend.get_many(ids)
        except DecodeError:  # one malformed meta: read the others one by one
            metas = {}
            for task_id in ids:
                try:
                    meta = backend.get(task_id)
                except DecodeError:
                    continue
                if meta is not None:
                    metas[task_id] = meta
    except OperationalError as exc:  # an outage: logged once by the process's watch
        logger.debug("Could not read revocations: %s", exc)
        return {}
    except Exception:
        logger.exception("Could not read revocations")
        return {}
    return {tid: meta for tid, meta in metas.items() if meta.get("status") == states.REVOKED}


def _is_revoked(task_id: str, raw: bytes) -> bool:
    """A stored meta says REVOKED (a malformed one does not, as :func:`read_revoked`)."""
    try:
        meta = decode_task_meta(task_id, raw)
    except DecodeError:
        return False
    return meta is not None and meta.get("status") == states.REVOKED


class Revocations:
    """This worker process's revoked ids: told directly, or read from the result store."""

    def __init__(self, app: Celery, *, quick: bool = False) -> None:
        self.app = app
        #: reads end within QUICK_CALL (a loop that must not stall: the supervisor)
        self.quick = quick
        #: id -> signal number to terminate with (None: do not terminate)
        self._told: collections.OrderedDict[str, int | None] = collections.OrderedDict()
        self._lock = threading.Lock()  # note() may come from another thread (remote control)
        self._last_poll = 0.0

    def note(self, ids: Iterable[str], terminate: bool = False, signal: Any = None) -> None:
        """Remember ``ids`` as revoked (with the signal when ``terminate``)."""
        signum = signal_number(signal) if terminate else None
        with self._lock:
            for task_id in ids:
                self._told[task_id] = signum
                self._told.move_to_end(task_id)
            while len(self._told) > REMEMBERED:
                self._told.popitem(last=False)

    def told(self) -> list[str]:
        """The ids this process was told are revoked (newest last)."""
        with self._lock:
            return list(self._told)

    def revoked(self, ids: Iterable[str]) -> set[str]:
        """The ids among ``ids`` that are revoked (told, or stored)."""
        wanted = [i for i in ids if i]
        with self._lock:
            told = {i for i in wanted if i in self._told}
        return told | set(read_revoked(self.app, [i for i in wanted if i not in told]))

    def revoked_in(self, deliveries: Iterable[Delivery]) -> set[str]:
        """The revoked task ids of a received batch: a delivery whose lease read its
        task's meta (``stored_meta``, the broker's :meth:`~celeriac.brokers.base.Broker.
        peek_revocations`) is decided from that, the others in one read."""
        found: set[str] = set()
        unread, peeked = [], []
        for d in deliveries:
            task_id = d.message.task_id or ""
            meta = d.stored_meta
            if meta is None or not task_id or meta[0] != task_id:
                unread.append(task_id)  # no read, or the id read was another's: read it
            else:
                peeked.append(task_id)
                if meta[1] is not None and _is_revoked(task_id, meta[1]):
                    found.add(task_id)
        with self._lock:
            found.update(i for i in peeked if i in self._told)
        return found | (self.revoked(unread) if unread else set())

    def poll_due(self) -> bool:
        now = time.monotonic()
        if now - self._last_poll < POLL_INTERVAL:
            return False
        self._last_poll = now
        return True

    def terminations(self, running: Iterable[str]) -> dict[str, int]:
        """Running ids revoked with ``terminate=True``: id -> signal number."""
        running = [i for i in running if i]
        with self._lock:
            out = {i: s for i in running if (s := self._told.get(i)) is not None}
        with retry.quick(QUICK_CALL) if self.quick else contextlib.nullcontext():
            found = read_revoked(self.app, [i for i in running if i not in out])
        for task_id, meta in found.items():
            if meta.get("terminate"):
                try:
                    out[task_id] = signal_number(meta["terminate"])
                except ValueError:
                    out[task_id] = int(signal_module.SIGTERM)
        return out


class RevokingConsumer:
    """The consumer's side of revocation, mixed into :class:`~.consumer.Consumer`:
    direct revokes, and stopping its running jobs revoked with ``terminate=True``."""

    runner: Any
    pool: Any
    revocations: Revocations

    def revoke(self, ids: Iterable[str], *, terminate: bool = False, signal: Any = None) -> None:
        """Revoke ``ids`` in this process: never start them; with ``terminate`` stop those
        running (the worker-side entry point, see :meth:`Worker.revoke`)."""
        ids = list(ids)
        self.revocations.note(ids, terminate, signal)
        if terminate:
            signum = signal_number(signal)
            for task_id in ids:
                self.terminate(task_id, signum)

    def terminate(self, task_id: str, signum: int) -> None:
        job = self.runner.active.get(task_id)
        if job is None or job.terminated is not None:
            return
        job.terminated = signum
        if self.pool.terminate(job, signum):
            logger.warning("Terminating task %s[%s] (revoked)", job.name, task_id)
        else:
            logger.warning("revoke(terminate=True): task %s[%s] runs on a thread of the %s "
                           "pool and cannot be stopped; it runs to its end and its result is "
                           "not stored (the task stays REVOKED)", job.name, task_id,
                           self.pool.name)

    def _watch_running(self) -> None:
        """Every second while jobs run: stop those revoked with ``terminate=True``."""
        if not self.runner.active or not self.revocations.poll_due():
            return
        for task_id, signum in self.revocations.terminations(self.runner.running()).items():
            self.terminate(task_id, signum)
