"""The prefork supervisor: starts, watches, limits and replaces child processes.

Each child (see :mod:`.child`) runs its own consumer with its own broker
connection under a lease ``owner`` id the supervisor chose. The supervisor:

* starts ``-c N`` children (fork, or spawn with ``worker_pool_start_method``);
* when a child exits without having asked to (crash, ``os._exit``, kill -9,
  OOM), calls ``broker.expire_owner(owner)`` at once, so its messages are
  redelivered now (counted as lost: poison pills reach the dead-letter store
  after ``worker_max_redeliveries``), records ``WorkerLostError`` for a task
  that was acknowledged before running (``acks_late=False``), and starts a
  replacement;
* renews every child's leases in one batched call per heartbeat (:class:`.renewer.Renewer`;
  children tell it what they hold over 1 MiB pipes, read every 100 ms, every 5 ms while
  they send), so a task holding its child's GIL cannot lose its lease; a stopped child is fenced;
* enforces hard time limits: SIGKILL when a task runs past its limit, then
  stores ``FAILURE``/``TimeLimitExceeded`` and acknowledges the message (it
  ran; it is not redelivered), or requeues it with ``acks_on_timeout`` false
  (:mod:`.timeouts`); children recycled by ``max_tasks_per_child`` /
  ``max_memory_per_child`` exit cleanly and are replaced;
* terminates revoked tasks (``revoke(terminate=True, signal=...)``, polled
  every second for the tasks children run, or :meth:`Supervisor.revoke`):
  the child is signalled, dies, its message is acknowledged (the task stays
  ``REVOKED``) and it is replaced;
* backs off restarting only when children crash before they are ready (an
  import error...), never for children killed from outside;
* grows and shrinks children with ``--autoscale=max,min`` (queue depth and
  busy children), publishes the node heartbeat and touches the liveness file;
* rides out broker outages without waiting for the server (:mod:`.outage`);
* sends ``worker_ready`` and says ``ready.`` once the first child's consumer
  declared the worker's queues on the broker (:mod:`.readiness`);
* signals: SIGTERM/SIGINT warm, again or SIGQUIT cold, SIGHUP restarts
  children gracefully (:mod:`.stopping`).
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import os
import signal
import socket
import time
import uuid
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any

from .. import signals
from ..app.control import signal_number
from .autoscale import Autoscaler, parse_autoscale
from .child import ChildSpec, Slot, child_main, fold_prefetch, spawn_conf
from .children import (
    Child,
    app_ref,
    child_pipe,
    crashed,
    describe,
    expire_owner,
    kill,
    record_lost,
    record_time_limit,
    settle_terminated,
)
from .health import NodeHealth
from .nodes import PreforkNode
from .outage import Outbox
from .readiness import ReadyGate
from .remote import RemoteControl
from .renewer import Renewer
from .revocation import Revocations
from .stopping import Stopping
from .targets import TargetWatch
from .taskevents import TaskEvents

if TYPE_CHECKING:
    from .main import Worker

logger = logging.getLogger("celeriac.worker")

TICK, BUSY_TICK = 0.1, 0.005  # seconds between ticks: quiet, children sending


class Supervisor(Stopping):
    """Keeps ``target`` children running until shutdown."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.app = worker.app
        conf = self.app.conf
        method = str(conf.worker_pool_start_method or "fork")
        self.mp: Any = multiprocessing.get_context(method)
        self.autoscaler: Autoscaler | None = None
        bounds = parse_autoscale(worker.options.get("autoscale"))
        if bounds is not None:
            self.autoscaler = Autoscaler(self.app, worker.queues, *bounds)
            self.target = bounds[1]
        else:
            self.target = worker.concurrency
        self.children: dict[int, Child] = {}
        self.processed_by_gone = 0
        self.prefetch_by_gone: dict[str, int] = {}
        self.state = "running"            # running -> warm -> cold
        self.deadline = 0.0
        self.cold_at = 0.0
        self.health = NodeHealth(self.app, worker.hostname, pool="prefork",
                                 concurrency=self.target, queues=worker.queues,
                                 liveness_file=worker.options.get("liveness_file"))
        lease = float(conf.worker_lease_seconds)
        self.renewer = Renewer(self.app.broker, float(conf.worker_heartbeat_interval
                                                      or lease / 3))
        self.revocations = Revocations(self.app, quick=True)
        self.started_names: collections.Counter[str] = collections.Counter()
        self.targets = TargetWatch(self.app)
        self.task_events = TaskEvents(self.app, worker.hostname)
        self.remote = RemoteControl(self.app, PreforkNode(self),
                                    heartbeat=worker.event_heartbeat)
        self._wake_r, self._wake_w = socket.socketpair()
        self._pending: list[int] = []
        self._quick_deaths = 0
        self._busy = False  # the children sent something last tick
        self._restart_after = 0.0
        self.weather = worker.weather  # the node's outages: its own calls, children's slots
        self.outbox = Outbox()  # broker steps an outage kept (expire_owner, acks...)

    # -- life cycle ---------------------------------------------------------------------
    def run(self) -> int:
        self._install_signals()
        self.worker.announce_banner()
        self._fill()
        self.remote.start()
        ready = ReadyGate(self.worker, self._declared, self._why_undeclared)
        while self.children or self.state == "running":
            self._tick()
            if self.state == "running":
                ready.check()  # worker_ready and "ready." once a child declared the queues
        self.outbox.close()
        self.remote.stop()
        self.health.remove()
        signals.worker_shutdown.send(sender=self.worker)
        self._wake_r.close()
        self._wake_w.close()
        return 0

    def _declared(self) -> bool:
        return any(child.slot.declared for child in self.children.values())

    def _why_undeclared(self) -> str:
        return next((c.slot.declare_error.decode(errors="replace")
                     for c in self.children.values() if c.slot.declare_error), "")

    def _tick(self) -> None:
        # children's pipes are read every tick, not waited on (see the module docstring)
        handles: list[Any] = [self._wake_r]
        handles += [child.process.sentinel for child in self.children.values()]
        for ready in wait(handles, timeout=BUSY_TICK if self._busy else TICK):
            if ready is self._wake_r:
                self._wake_r.recv(4096)
        self._busy = self._read_messages()
        self._handle_signals()
        self._reap()
        self.weather.observe_all({pid: c.slot.outage for pid, c in self.children.items()})
        self.outbox.flush()
        if self.renewer.due():
            self.renewer.renew()
        now = time.time()
        self._enforce_limits(now)
        self._watch_revoked()
        self._shutdown_step(now)
        if self.state == "running":
            self._scale()
            self._fill()
        self._beat(now)

    # -- children -----------------------------------------------------------------------
    def _spec(self) -> ChildSpec:
        w = self.worker
        conf = self.app.conf
        spec = ChildSpec(owner=f"{w.hostname}:{uuid.uuid4().hex[:16]}", hostname=w.hostname,
                         queues=list(w.queues), **w.prefetch.child_options(),
                         max_tasks=conf.worker_max_tasks_per_child,
                         max_memory_kib=conf.worker_max_memory_per_child, parent=os.getpid())
        if self.mp.get_start_method() == "fork":
            spec.app = self.app
        else:
            spec.app_ref = app_ref(self.app)
            spec.conf = spawn_conf(conf)
        return spec

    def _start_child(self) -> None:
        spec = self._spec()
        signals.worker_before_create_process.send(sender=self)
        slot = self.mp.RawValue(Slot)
        slot.task_events = int(bool(self.app.conf.worker_send_task_events))
        reader, writer = child_pipe(self.mp)
        process = self.mp.Process(target=child_main, args=(spec, slot, writer),
                                  name=f"ForkPoolWorker-{len(self.children) + 1}", daemon=False)
        process.start()
        writer.close()
        self.children[process.pid] = Child(process, slot, reader, spec.owner,
                                           started_at=time.monotonic())
        logger.debug("Started child %d (%s)", process.pid, spec.owner)

    def _fill(self) -> None:
        if time.monotonic() < self._restart_after:
            return
        while len(self._active()) < self.target:
            self._start_child()

    def _note_exit(self, child: Child, code: int | None) -> None:
        """Back off (up to 10 s) when children keep crashing before they are ready (an
        import error, a crash at start-up); a child killed from outside is just replaced."""
        if child.slot.ready or not crashed(code) or child.killed_for_limit \
                or child.terminated is not None:
            self._quick_deaths = 0
            return
        self._quick_deaths += 1
        delay = min(10.0, 0.25 * 2 ** self._quick_deaths)
        self._restart_after = time.monotonic() + delay
        logger.error("Children exit right after starting; next start in %.1fs", delay)

    def _read_messages(self) -> bool:
        return sum([self._read_messages_of(child) for child in list(self.children.values())]) > 0

    def _read_messages_of(self, child: Child) -> int:
        """Read what a child told us (a hard-limited task's delivery, leases); how much."""
        count = 0
        try:
            while child.conn.poll():
                count += 1
                message = child.conn.recv()
                if message[0] == "hard":
                    child.hard = (message[1], message[2], message[3])
                elif message[0] == "started":  # (name, queue, id, waited) per start
                    self.targets.observe_all(message[1], self.started_names)
                elif message[0] == "job":  # a description too large for the slot
                    child.job_info = message[1]
                else:
                    self.renewer.apply(child.process.pid, message)
        except (EOFError, OSError):
            pass
        return count

    def _reap(self) -> None:
        for pid, child in list(self.children.items()):
            if child.process.is_alive():
                continue
            child.process.join()
            del self.children[pid]
            self._child_gone(pid, child, child.process.exitcode)

    def _child_gone(self, pid: int, child: Child, code: int | None) -> None:
        slot = child.slot
        self.processed_by_gone += slot.processed
        fold_prefetch(self.prefetch_by_gone, slot)
        self.health.progress(slot.progress)
        self._read_messages_of(child)
        held = self.renewer.forget(pid)
        if child.killed_for_limit:
            record_time_limit(self.app, child, self.outbox)
            if child.hard is not None:
                self.task_events.send(("task-failed", {
                    "uuid": child.hard[0], "exception": f"TimeLimitExceeded({slot.hard})",
                    "traceback": None}), task=self.app.tasks.get(child.hard[1]))
        elif child.terminated is not None:
            settle_terminated(self.app, child, held, code, self.outbox)
            self.task_events.revoked(child.terminated[0], terminated=True,
                                     signum=child.terminated[1])
        elif code != 0:
            logger.error("Process %s pid %d exited with %s", child.process.name, pid,
                         describe(code))
            expire_owner(self.app, child.owner, self.outbox,
                         "%d message(s) of the exited child made available for redelivery")
            if slot.started and slot.acks_early:
                record_lost(self.app, child, slot.task_id.decode(), code, self.outbox)
        self.weather.observe(pid, None)
        self._note_exit(child, code)
        child.conn.close()

    # -- hard time limits ----------------------------------------------------------------
    def _enforce_limits(self, now: float) -> None:
        for child in self.children.values():
            slot = child.slot
            started, hard = slot.started, slot.hard
            if child.killed_for_limit or not started or not hard or now < started + hard:
                continue
            task_id = slot.task_id.decode()
            if child.hard is None or child.hard[0] != task_id:
                self._read_messages()
                if child.hard is None or child.hard[0] != task_id:
                    continue
            logger.error("Hard time limit (%ss) exceeded for %s[%s]: killing child %d",
                         hard, child.hard[1], task_id, child.process.pid)
            child.killed_for_limit = True
            kill(child.process.pid, signal.SIGKILL)

    # -- revocation ----------------------------------------------------------------------
    def revoke(self, ids: list[str], *, terminate: bool = False, signal: Any = None) -> None:
        """Revoke ``ids`` on this node; with ``terminate``, signal the children running them
        (the worker-side entry point, see :meth:`~celeriac.worker.main.Worker.revoke`)."""
        self.revocations.note(ids, terminate, signal)
        if terminate:
            wanted = set(ids)
            signum = signal_number(signal)
            for child in list(self.children.values()):
                task_id = child.slot.task_id.decode()
                if child.slot.started and task_id in wanted:
                    self._terminate(child, task_id, signum)

    def _watch_revoked(self) -> None:
        """Every second while children run tasks: terminate those revoked with terminate."""
        busy = {c.slot.task_id.decode(): c for c in self.children.values()
                if c.slot.started and c.terminated is None and not c.killed_for_limit}
        if not busy or not self.revocations.poll_due():
            return
        for task_id, signum in self.revocations.terminations(list(busy)).items():
            self._terminate(busy[task_id], task_id, signum)

    def _terminate(self, child: Child, task_id: str, signum: int) -> None:
        if child.terminated is not None:
            return
        logger.warning("Terminating task %s in child %d with %s (revoked)", task_id,
                       child.process.pid, signal.Signals(signum).name)
        child.terminated = (task_id, signum)
        child.slot.terminating = 1  # the child's own handlers let the signal kill it
        kill(child.process.pid, signum)

    # -- scaling and heartbeat -------------------------------------------------------------
    def _scale(self) -> None:
        if self.autoscaler is None:
            return
        busy = sum(1 for c in self._active() if c.slot.started)
        target = self.autoscaler.decide(len(self._active()), busy)
        if target < len(self._active()):
            idle = [c for c in self._active() if not c.slot.started]
            for child in idle[:len(self._active()) - target]:
                child.retiring = True
                kill(child.process.pid, signal.SIGTERM)
        self.target = target

    def _beat(self, now: float) -> None:
        processed = self.processed_by_gone
        busy = 0
        for child in self.children.values():
            processed += child.slot.processed
            self.health.progress(child.slot.progress)
            if child.slot.started:
                busy += 1
        if busy:
            self.health.progress(now)
        self.health.record["concurrency"] = len(self.children)
        self.health.record["time_to_start"] = self.targets.summary()
        self.health.beat(processed=processed, busy=busy)
