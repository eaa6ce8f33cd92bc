"""A prefork child process: one consumer on its main thread, reporting to the supervisor.

The supervisor creates a :class:`Slot` in shared memory for each child and reads
it without any system call from the child: the task running now (id, start time,
hard limit, whether it was acknowledged before running, and its description for
``inspect active``: Celery's ``Request.info()``, pickled, see :func:`write_job`),
the number of tasks processed, the time of the last progress, and whether its
consumer declared its queues (the supervisor says the node is ready once the first
child's did, :mod:`.readiness`). What each start means for the supervisor's
counters (tasks by name, time to start by queue) goes over the pipe in batches: at
the latest when the child's buffer runs empty, a receive returns, or a task runs
past the watcher's tick. For a task with a hard time limit the child also sends
its :class:`~celeriac.brokers.base.Delivery` over the pipe, so the supervisor can
record ``TimeLimitExceeded`` and settle the message after killing the child; so it does
for a task acknowledged before running with ``retry_on_worker_lost``, which the
supervisor retries if the child dies (:func:`~.children.record_lost`).

The child tells the supervisor what it holds and drops over its pipe
(:class:`~celeriac.worker.leases.SupervisorRenewal`): the supervisor renews
its leases, so a task holding the child's GIL cannot lose them.

Signals in a child: SIGTERM = warm (finish the running task, give back what
was fetched, exit 0), SIGQUIT = cold (abort now, give everything back, exit
0). SIGINT and SIGHUP are ignored: the supervisor coordinates (a terminal's
Ctrl-C reaches the whole process group). When the supervisor terminates a
revoked task it sets ``terminating`` in the slot first: then any signal kills
the child as it would a process without handlers.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import pickle
import resource
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from .. import retry, serialization, signals
from ..security import check_settings
from .consumer import Consumer
from .inspection import message_info
from .job import Job
from .leases import SupervisorRenewal
from .limits import AlarmLimits
from .monitor import Monitor
from .outage import Weather
from .pools import SoloPool
from .prefetch import PrefetchRule
from .taskevents import TaskEvents

if TYPE_CHECKING:
    from ..app.base import Celery

logger = logging.getLogger("celeriac.worker")

#: the environment variable naming the ``celeriac --config`` module (a spawned child loads it)
CLI_CONFIG = "CELERIAC_CONFIG_MODULE"
#: conf keys handed to a spawned child whether changed or not (a forked child inherits
#: the app as is); every other setting changed in the supervisor goes too
SPAWN_CONF_PREFIXES = ("worker_", "broker_", "result_", "task_time_limit",
                       "task_soft_time_limit", "accept_content", "task_serializer",
                       "task_message_max_size", "security_", "include", "imports")


def spawn_conf(conf: Any) -> dict[str, Any]:
    """The settings a spawned child applies over the app it imports: the worker's own
    groups and every setting changed in the supervisor (by code, signal handlers, the
    command line). One that cannot be pickled is named in a warning: the child keeps the
    value its import of the app gives."""
    wanted = {k: v for k, v in conf.items() if k.startswith(SPAWN_CONF_PREFIXES)}
    wanted.update((k, conf[k]) for k in conf.changes)
    out, unsent = {}, []
    for key, value in wanted.items():
        try:
            pickle.dumps(value)
        except Exception:
            unsent.append(key)
            continue
        out[key] = value
    if unsent:
        logger.warning("spawned children cannot be handed %s (not picklable): they use the "
                       "value their import of the app sets", ", ".join(sorted(unsent)))
    return out


#: the largest pickled task description a slot holds (a larger one goes over the pipe)
JOB_BYTES = 4096


class Slot(ctypes.Structure):
    """What a child is doing, in memory shared with the supervisor."""

    _fields_ = [
        ("started", ctypes.c_double),     # wall time the running task started; 0 = idle
        ("hard", ctypes.c_double),        # its hard time limit in seconds; 0 = none
        ("acks_early", ctypes.c_bool),    # acknowledged before running (acks_late=False)
        ("task_id", ctypes.c_char * 64),
        ("processed", ctypes.c_longlong),
        ("progress", ctypes.c_double),    # wall time of the last receive or finished task
        ("exiting", ctypes.c_int),        # 1: the child decided to exit (recycling)
        ("ready", ctypes.c_int),          # 1: the consumer started (not a start-up crash)
        ("declared", ctypes.c_int),       # 1: the consumer declared its queues (.readiness)
        ("declare_error", ctypes.c_char * 256),  # why its last declaration failed; b""
        ("terminating", ctypes.c_int),    # 1: a revoke(terminate) signal is coming: die by it
        ("task_events", ctypes.c_int),    # 1: send task events (-E, enable_events)
        ("outage", ctypes.c_char * 512),  # b"<server>\t<why>" its calls find failing; b""
        # the consumer's prefetch counters (see PrefetchRule.counters)
        ("lease_requests", ctypes.c_longlong),
        ("batched_requests", ctypes.c_longlong),
        ("largest_request", ctypes.c_longlong),
        ("received", ctypes.c_longlong),
        ("given_back", ctypes.c_longlong),
        ("already_done", ctypes.c_longlong),  # redelivered, outcome stored: not run
        ("job_seq", ctypes.c_ulonglong),  # odd while the child writes ``job``
        ("job_size", ctypes.c_int),       # bytes of ``job`` in use (0: over the pipe)
        ("job", ctypes.c_char * JOB_BYTES),  # the running task's info, pickled
    ]


def write_job(slot: Slot, info: dict[str, Any]) -> bool:
    """Put the running task's description in ``slot`` (False: too large, the caller sends
    it over the pipe). A sequence number, odd while writing, lets the supervisor's
    :func:`read_job` tell a torn read."""
    data = pickle.dumps(info, protocol=pickle.HIGHEST_PROTOCOL)
    fits = len(data) <= JOB_BYTES
    slot.job_seq += 1
    if fits:
        ctypes.memmove(ctypes.addressof(slot) + Slot.job.offset, data, len(data))
    slot.job_size = len(data) if fits else 0
    slot.job_seq += 1
    return fits


def read_job(slot: Slot) -> dict[str, Any] | None:
    """The description :func:`write_job` left in ``slot`` (None: none, or rewritten during
    every try)."""
    for _ in range(100):
        seq = slot.job_seq
        if seq % 2:
            continue
        size = slot.job_size
        data = (ctypes.string_at(ctypes.addressof(slot) + Slot.job.offset, size)
                if 0 < size <= JOB_BYTES else b"")
        if slot.job_seq == seq:
            return pickle.loads(data) if data else None
    return None


#: starts told in one frame at most (a frame is sent sooner when the buffer runs empty)
STARTS_PER_FRAME = 64

#: the prefetch counters a child keeps in its slot
PREFETCH_COUNTERS = ("lease_requests", "batched_requests", "largest_request", "received",
                     "given_back", "already_done")


def fold_prefetch(totals: dict[str, int], slot: Slot) -> None:
    """Add a child's prefetch counters to ``totals`` (the largest request: the maximum)."""
    for key in PREFETCH_COUNTERS:
        value = int(getattr(slot, key))
        old = totals.get(key, 0)
        totals[key] = max(old, value) if key == "largest_request" else old + value


@dataclass
class ChildSpec:
    """How to start one child."""

    owner: str
    hostname: str
    queues: list[str]
    #: fixed extra messages (an explicit multiplier), used when ``prefetch_budget`` is None
    prefetch: int = 0
    #: the adaptive rule's budget in seconds (see :mod:`.prefetch`)
    prefetch_budget: float | None = None
    max_tasks: int | None = None
    max_memory_kib: int | None = None
    app: Any = None                      # the app itself (fork)
    app_ref: str | None = None           # "module:attr" to import it (spawn)
    parent: int = 0                      # the supervisor's pid: exit when it is gone
    conf: dict[str, Any] = field(default_factory=dict)


class ColdShutdown(BaseException):
    """Raised in a child's main thread on SIGQUIT: abort and give everything back."""


def rss_kib() -> int:
    """Current resident set size of this process in KiB."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


class ChildMonitor(Monitor):
    """Writes the child's state into its slot; decides when the child recycles itself."""

    def __init__(self, slot: Slot, renewal: SupervisorRenewal, spec: ChildSpec) -> None:
        self.slot, self.renewal, self.spec = slot, renewal, spec
        self.pid = os.getpid()
        self.consumer: Consumer | None = None
        #: starts not told yet: (task name, queue, task id, seconds it waited to start)
        self._started: list[tuple[Any, str, Any, float | None]] = []
        self._started_lock = threading.Lock()

    def received(self, count: int) -> None:
        self.flush()
        self.slot.progress = time.time()
        if self.consumer is not None:
            for key, value in self.consumer.prefetch.counters().items():
                setattr(self.slot, key, value)
            self.slot.already_done = self.consumer.runner.done_before.count
        if self.spec.parent and os.getppid() != self.spec.parent and self.consumer is not None:
            logger.error("Child %d: the supervisor %d is gone; stopping", os.getpid(),
                         self.spec.parent)
            self.consumer.stop()

    def task_started(self, job: Job, hard: float | None) -> None:
        slot = self.slot
        slot.task_id = job.id.encode()[:63]
        slot.hard = hard or 0.0
        slot.acks_early = not job.acks_late
        if hard or (slot.acks_early and job.task.retry_on_worker_lost):
            self.renewal.send(("hard", job.id, job.name, job.delivery))
        info = message_info(
            job.delivery.message, job.delivery.queue, self.spec.hostname, time_start=None,
            acknowledged=not job.acks_late, worker_pid=self.pid,
            redelivered=job.delivery.redelivered,
            arguments=(list(job.request.args or ()), dict(job.request.kwargs or {}))
            if job.delivery.message.content_type == serialization.JSON else None)
        if not write_job(slot, info):
            self.renewal.send(("job", info))
        with self._started_lock:
            self._started.append((info["name"], job.delivery.queue, job.id, job.time_to_start))
            full = len(self._started) >= STARTS_PER_FRAME
        consumer = self.consumer
        if full or consumer is None or not consumer.buffer:  # the last job held: tell now
            self.flush()
        slot.started = time.time()

    def flush(self) -> None:
        """Tell the supervisor the starts not told yet, in one frame."""
        with self._started_lock:
            started, self._started = self._started, []
        if started:
            self.renewal.send(("started", started))

    def body_ended(self, job: Job) -> None:
        self.slot.hard = 0.0  # storing the outcome may wait out an outage: never killed

    def task_finished(self, job: Job) -> None:
        slot = self.slot
        slot.started = 0.0
        slot.processed += 1
        slot.progress = time.time()
        if self._should_recycle() and self.consumer is not None:
            slot.exiting = 1
            self.consumer.stop()

    def _should_recycle(self) -> bool:
        spec = self.spec
        if spec.max_tasks and self.slot.processed >= spec.max_tasks:
            logger.info("Child %d processed %d tasks: recycling", os.getpid(), spec.max_tasks)
            return True
        if spec.max_memory_kib:
            rss = rss_kib()
            if rss > spec.max_memory_kib:
                logger.warning("Child %d uses %d KiB > max_memory_per_child %d KiB: recycling",
                               os.getpid(), rss, spec.max_memory_kib)
                return True
        return False


def load_app(spec: ChildSpec) -> Celery:
    if spec.app is not None:
        return spec.app
    assert spec.app_ref, "a spawned child needs app_ref"
    module_name, _, attr = spec.app_ref.partition(":")
    app: Celery = getattr(importlib.import_module(module_name), attr)
    if os.environ.get(CLI_CONFIG):  # ``celeriac --config MODULE``, as the supervisor loaded it
        app.config_from_object(os.environ[CLI_CONFIG])
    for key, value in spec.conf.items():
        app.conf[key] = value
    app.finalize()
    check_settings(app)  # a spawned child loads the keys again (the registry is per process)
    return app


def _die_with_supervisor(spec: ChildSpec) -> None:
    """Ask Linux to send SIGTERM (warm stop) to this child when its supervisor dies,
    so a SIGKILLed supervisor never leaves children consuming on their own."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            logger.debug("prctl(PR_SET_PDEATHSIG) unavailable")
    if spec.parent and os.getppid() != spec.parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def child_main(spec: ChildSpec, slot: Slot, conn: Connection) -> None:
    """Entry point of a child process."""
    app = load_app(spec)
    renewal = SupervisorRenewal(conn)
    monitor = ChildMonitor(slot, renewal, spec)
    pool = SoloPool()
    events = TaskEvents(app, spec.hostname, pid=spec.parent or None,
                        enabled=lambda: bool(slot.task_events))
    prefetch = (PrefetchRule(1, fixed=spec.prefetch) if spec.prefetch_budget is None
                else PrefetchRule(1, budget=spec.prefetch_budget))
    consumer = Consumer(app, spec.queues, pool, hostname=spec.hostname, prefetch=prefetch,
                        owner=spec.owner, limits=AlarmLimits(), hard_in_process=False,
                        monitor=monitor, renewal=renewal, events=events)
    monitor.consumer = consumer
    consumer.declaration.on_done = lambda: setattr(slot, "declared", 1)
    consumer.declaration.on_failed = lambda why: setattr(slot, "declare_error",
                                                         why.encode()[:255])
    weather = Weather(report=lambda where: setattr(slot, "outage",
                                                   (where or "").encode()[:511]))
    retry.watch_outages(weather)  # the supervisor logs the outage for the node
    _install_signals(consumer, slot, weather)
    _die_with_supervisor(spec)
    signals.worker_process_init.send(sender=None)
    code = 0
    try:
        slot.ready = 1
        with retry.patient():  # finished tasks wait out an outage to settle
            consumer.run()
    except ColdShutdown:
        pass
    except Exception:
        logger.exception("Child %d failed", os.getpid())
        code = 1
    finally:
        signal.signal(signal.SIGQUIT, signal.SIG_IGN)
        given_back = consumer.release_running()
        if given_back:
            logger.warning("Child %d gave back %d running task(s)", os.getpid(), given_back)
        signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=code)
        monitor.flush()
        conn.close()
        logging.shutdown()
        os._exit(code)  # skip interpreter teardown: leases are given back, nothing to join


def _die_by(signum: int) -> None:
    """revoke(terminate=True) sent ``signum``: die by it as a process without handlers
    would (the supervisor acknowledges the task and starts a replacement)."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # a signal whose default is to be ignored


def _install_signals(consumer: Consumer, slot: Slot, weather: Weather) -> None:
    def warm(signum: int, frame: Any) -> None:
        if slot.terminating:
            _die_by(signum)
        consumer.stop()

    def cold(signum: int, frame: Any) -> None:
        if slot.terminating:
            _die_by(signum)
        consumer.stop()
        weather.give_up()
        raise ColdShutdown()

    def ignored(signum: int, frame: Any) -> None:
        if slot.terminating:
            _die_by(signum)

    signal.signal(signal.SIGTERM, warm)
    signal.signal(signal.SIGQUIT, cold)
    for name in ("SIGINT", "SIGHUP"):
        signal.signal(getattr(signal, name), ignored)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
