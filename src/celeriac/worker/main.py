"""``celeriac worker``: set up logging and signals, run consumers, shut down safely.

Shutdown follows Celery's signals with safer defaults: the first SIGTERM or
SIGINT is a warm shutdown (stop fetching, give unstarted messages back, let
running tasks finish within ``worker_soft_shutdown_timeout``, then give back
whatever still runs); a second one, or SIGQUIT, is a cold shutdown (give back
everything now). Nothing is acknowledged that did not run to completion.

The worker sends ``worker_ready`` and says ``<hostname> ready.`` only once its
consumer declared the queues it consumes on the broker (:mod:`.readiness`), as
Celery's worker does.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from .. import config, retry, signals
from ..beat.embedded import start_embedded
from ..beat.scheduler import scheduler_class
from ..brokers.base import redact
from ..exceptions import ImproperlyConfigured, OperationalError
from ..security import check_settings
from ..version import __version__
from .consumer import Consumer, default_hostname
from .health import NodeHealth
from .job import Job
from .leases import Renewal
from .monitor import Monitor
from .nodes import InProcessNode
from .outage import Weather, patient_run
from .pools import make_pool
from .prefetch import PrefetchRule
from .ratelimit import check_rate_limits
from .readiness import ReadyGate
from .remote import HEARTBEAT_FREQ, RemoteControl
from .renewer import ProcessRenewal
from .supervisor import Supervisor
from .targets import TargetWatch

if TYPE_CHECKING:
    from ..app.base import Celery

logger = logging.getLogger("celeriac.worker")


def setup_logging(app: Celery, loglevel: str | int, logfile: str | None = None) -> None:
    """Celery's order: ``setup_logging`` receivers, if any, configure logging themselves
    (celeriac then touches nothing); else the root logger gets one handler and
    ``after_setup_logger``/``after_setup_task_logger`` are sent."""
    level = loglevel if isinstance(loglevel, int) else logging.getLevelName(str(loglevel).upper())
    if not isinstance(level, int):
        level = logging.INFO
    fmt = app.conf.worker_log_format
    if signals.setup_logging.send(sender=None, loglevel=level, logfile=logfile, format=fmt,
                                  colorize=False):
        return
    handler: logging.Handler = (logging.FileHandler(logfile) if logfile
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter(app.conf.worker_log_format))
    root = logging.getLogger()
    if app.conf.worker_hijack_root_logger:
        for old in list(root.handlers):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    signals.after_setup_logger.send(sender=None, logger=root, loglevel=level, logfile=logfile,
                                    format=fmt, colorize=False)
    signals.after_setup_task_logger.send(sender=None, logger=logging.getLogger("celery.task"),
                                         loglevel=level, logfile=logfile, format=fmt,
                                         colorize=False)


def expand_hostname(name: str | None) -> str:
    """Celery's ``-n`` expansion: ``%h`` host, ``%n`` name part, ``%d`` domain; adds ``celery@``."""
    import socket

    host = socket.gethostname()
    if not name:
        return default_hostname()
    short, _, domain = host.partition(".")
    name = name.replace("%h", host).replace("%n", short).replace("%d", domain)
    return name if "@" in name else f"{name}@{host}"


class ProgressMonitor(Monitor):
    """Remembers when the consumer last received or finished something, and checks each
    start's time-to-start against the queue targets."""

    def __init__(self, targets: TargetWatch) -> None:
        self.last = time.time()
        self.targets = targets

    def task_started(self, job: Job, hard: float | None) -> None:
        self.targets.observe(job.delivery.queue, job.name, job.id, job.time_to_start)

    def received(self, count: int) -> None:
        self.last = time.time()

    def task_finished(self, job: Job) -> None:
        self.last = time.time()


class Worker:
    """A worker node: one or more consumers and the shutdown logic around them."""

    def __init__(self, app: Celery, *, hostname: str | None = None,
                 queues: list[str] | None = None, concurrency: int | None = None,
                 pool: str | None = None, loglevel: str = "WARNING", logfile: str | None = None,
                 beat: bool = False, prefetch_multiplier: int | None = None,
                 setup_logs: bool = True, quiet: bool = False, **options: Any) -> None:
        self.app = app
        self.hostname = expand_hostname(hostname)
        self.queues = queues or [app.conf.task_default_queue]
        self.pool_name = pool or app.conf.worker_pool
        self.concurrency = concurrency or app.conf.worker_concurrency or os.cpu_count() or 1
        self.loglevel, self.logfile = loglevel, logfile
        self.beat = beat
        #: extra messages beyond the free slots: adaptive, or fixed by an explicit multiplier
        self.prefetch = PrefetchRule.for_worker(app.conf, self.concurrency, prefetch_multiplier)
        self.setup_logs = setup_logs
        self.quiet = quiet
        self.options = options
        self.consumer: Consumer | None = None
        self.supervisor: Supervisor | None = None
        self._signals = 0
        self._stop = threading.Event()
        #: outages seen by this process (the solo/threads/asyncio pools; see .outage)
        self.weather = Weather()
        self._beat_stop = threading.Event()

    @property
    def event_heartbeat(self) -> float:
        """Seconds between ``worker-heartbeat`` events (``--heartbeat-interval``, default
        2); 0 with ``--without-heartbeat`` (no ``worker-*`` events)."""
        if self.options.get("without_heartbeat"):
            return 0.0
        return float(self.options.get("heartbeat_interval") or HEARTBEAT_FREQ)

    def start(self) -> int:
        app = self.app
        signals.celeryd_init.send(sender=self.hostname, instance=self, conf=app.conf,
                                  options=dict(self.options))
        config.validate(app.conf)
        if self.beat:  # a bad beat_scheduler stops the start-up, not a thread started later
            scheduler_class(app.conf.get("beat_scheduler"))
        check_settings(app)  # security_*: keys loaded or start-up fails naming the setting
        if self.setup_logs:
            setup_logging(app, self.loglevel, self.logfile)
        app.finalize()
        check_rate_limits(app)
        # before worker_init, whose receivers (the Django fix-up) close the connections
        # the check opened, so none is inherited by prefork children
        self.check_result_backend()
        signals.worker_init.send(sender=self)
        self.check_broker()
        signals.celeryd_after_setup.send(sender=self.hostname, instance=self, conf=app.conf)
        self._start_metrics()
        if self.pool_name == "prefork" and self._in_process_broker():
            logger.warning("The memory broker lives in one process: using the threads pool "
                           "instead of prefork")
            self.pool_name = "threads"
        retry.watch_outages(self.weather)  # one line per outage, for the node (.outage)
        if self.pool_name == "prefork":
            self._start_beat()
            try:
                self.supervisor = Supervisor(self)
                return self.supervisor.run()
            finally:
                self._beat_stop.set()
        return self._run_in_process()

    def _start_metrics(self) -> None:
        """``--metrics-port``: this node's Prometheus metrics (task events turned on)."""
        port = self.options.get("metrics_port")
        if port is None:
            return
        from ..metrics.exporter import Exporter

        self.app.conf.worker_send_task_events = True
        self.exporter = Exporter(self.app, queues=self.queues, node=self.hostname)
        bound = self.exporter.start(int(port), self.options.get("metrics_addr") or "127.0.0.1")
        logger.warning("%s: Prometheus metrics on http://%s:%d/metrics", self.hostname,
                       self.options.get("metrics_addr") or "127.0.0.1", bound)

    def _in_process_broker(self) -> bool:
        return self.app.broker_url.split(":", 1)[0] == "memory"

    def revoke(self, ids: list[str], *, terminate: bool = False, signal: Any = None) -> None:
        """The worker-side entry point of revocation: never start ``ids`` here, and with
        ``terminate`` stop those running with ``signal`` (default SIGTERM; prefork: the
        child is signalled and replaced; asyncio: the task is cancelled; threads/solo:
        a warning, the task runs to its end). ``app.control.revoke`` stores the
        revocation for every worker; a remote-control channel calls this directly in
        the worker's main process. Prefork children learn of revocations that are not
        terminations from the result store (checked before every start), so a channel
        should store them too, as ``app.control.revoke`` does."""
        if self.supervisor is not None:
            self.supervisor.revoke(ids, terminate=terminate, signal=signal)
        elif self.consumer is not None:
            self.consumer.revoke(ids, terminate=terminate, signal=signal)

    def check_broker(self) -> None:
        """Fail at start-up, naming the broker, when it cannot be reached."""
        try:
            self.app.broker.stats(self.queues[0])
        except OperationalError:
            raise
        except Exception as exc:
            raise OperationalError(f"cannot reach the broker at {self.app.broker.url}: "
                                   f"{exc}") from exc

    def check_result_backend(self) -> None:
        """Fail at start-up, naming ``result_backend``, when its store cannot be created or
        read (an unsupported URL, a missing driver, an unconfigured Django, no server)."""
        url = self.app.backend_url
        try:
            store = self.app.backend
            if store is not None:
                store.get("celeriac-start-up-check")
        except ImproperlyConfigured:
            raise
        except Exception as exc:
            raise ImproperlyConfigured(f"result_backend {redact(url or '')}: cannot be used: "
                                       f"{type(exc).__name__}: {exc}") from exc

    def banner(self) -> str:
        app = self.app
        tasks = "\n".join(f"  . {name}" for name in sorted(app.tasks)
                          if not name.startswith("celery."))
        return (f"celeriac worker {self.hostname} v{_version()}\n"
                f"- app: {app.main or '__main__'}  broker: {app.broker.url}\n"
                f"- results: {app.backend_url or 'disabled'}\n"
                f"- pool: {self.pool_name} (concurrency {self.concurrency})\n"
                f"- queues: {', '.join(self.queues)}\n[tasks]\n{tasks}")

    def announce_banner(self) -> None:
        """The banner on stdout whatever the log level, as Celery prints it (not with -q)."""
        if not self.quiet:
            print(self.banner(), flush=True)

    def announce_ready(self) -> None:
        """``<hostname> ready.``: logged at INFO; printed when INFO is not shown (not -q).
        Said after the consumer declared its queues (:mod:`.readiness`), right after
        ``worker_ready`` is sent."""
        logger.info("%s ready.", self.hostname)
        if not self.quiet and not logger.isEnabledFor(logging.INFO):
            print(f"{self.hostname} ready.", flush=True)

    def _renewal(self) -> Renewal | None:
        """Leases renewed by a separate process (a task holding the GIL cannot stop it),
        started now; the in-process memory broker renews from a thread (None)."""
        if self._in_process_broker():
            return None
        conf = self.app.conf
        lease = float(conf.worker_lease_seconds)
        renewal = ProcessRenewal(self.app, float(conf.worker_heartbeat_interval or lease / 3))
        renewal.launch()
        return renewal

    def _run_in_process(self) -> int:
        pool = make_pool(self.pool_name, self.concurrency)
        progress = ProgressMonitor(TargetWatch(self.app))
        self.consumer = Consumer(self.app, self.queues, pool, hostname=self.hostname,
                                 prefetch=self.prefetch, monitor=progress,
                                 renewal=self._renewal(),
                                 poll_timeout=float(self.options.get("poll_timeout", 1.0)))
        health = NodeHealth(self.app, self.hostname, pool=self.pool_name,
                            concurrency=pool.concurrency, queues=self.queues,
                            liveness_file=self.options.get("liveness_file"))
        self._install_signals()
        self.announce_banner()
        thread = threading.Thread(target=patient_run, args=(self.consumer.run,),
                                  name="celeriac-consumer")
        thread.start()
        remote = RemoteControl(self.app, InProcessNode(self, self.consumer),
                               heartbeat=self.event_heartbeat)
        remote.start()
        self._start_beat()
        declaration = self.consumer.declaration
        ready = ReadyGate(self, declaration.done.is_set, lambda: declaration.error)
        while thread.is_alive() and not self._stop.is_set():
            ready.check()  # worker_ready and "ready." once the queues are declared
            health.progress(time.time() if pool.running() else progress.last)
            health.record["time_to_start"] = progress.targets.summary()
            health.beat(processed=self.consumer.runner.processed, busy=pool.running())
            self.weather.tick()
            (self._stop if ready.said else declaration.done).wait(0.5)
        health.remove()
        self._warm_shutdown(pool, thread)
        remote.stop()
        signals.worker_shutdown.send(sender=self)
        return 0

    def _start_beat(self) -> None:
        if not self.beat:
            return
        start_embedded(self.app, self._beat_stop)

    def _warm_shutdown(self, pool: Any, thread: threading.Thread) -> None:
        assert self.consumer is not None
        signals.worker_shutting_down.send(sender=self.hostname, sig="SIGTERM", how="Warm",
                                          exitcode=0)
        self._beat_stop.set()
        self.consumer.stop()
        thread.join()
        grace = self.shutdown_grace()
        if self._signals < 2 and not pool.join(grace):
            logger.warning("Tasks still running after %.0fs: giving them back", grace)
        pool.cancel(5.0)  # asyncio: cancelled tasks give their messages back themselves
        given_back = self.consumer.release_running()
        if given_back:
            logger.warning("Released %d running task(s) back to the queue", given_back)
        pool.shutdown()
        if pool.running():
            self._abandon_running()

    def shutdown_grace(self) -> float:
        """Seconds a warm shutdown waits for running tasks before giving them back."""
        return float(self.app.conf.worker_soft_shutdown_timeout or 0)

    def _abandon_running(self) -> None:
        """Cold: task threads cannot be killed; their leases are already given back
        (fenced), so leave now instead of waiting for them."""
        logging.shutdown()
        os._exit(0)

    def stop(self, cold: bool = False) -> None:
        self._signals += 2 if cold else 1
        if self._signals >= 2:
            self.weather.give_up()
        if self.consumer is not None:
            self.consumer.stop()
        self._stop.set()
        if self._signals >= 2 and self.consumer is not None:
            self.consumer.release_running()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def warm(signum: int, frame: Any) -> None:
            logger.warning("worker: %s shutdown (%s)",
                           "Cold" if self._signals else "Warm", signal.Signals(signum).name)
            self.stop(cold=self._signals > 0)

        def cold(signum: int, frame: Any) -> None:
            logger.warning("worker: Cold shutdown (%s)", signal.Signals(signum).name)
            self.stop(cold=True)

        def hup(signum: int, frame: Any) -> None:
            logger.warning("SIGHUP ignored by the %s pool (no child processes to restart)",
                           self.pool_name)

        signal.signal(signal.SIGTERM, warm)
        signal.signal(signal.SIGINT, warm)
        if hasattr(signal, "SIGQUIT"):
            signal.signal(signal.SIGQUIT, cold)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, hup)


def _version() -> str:
    return __version__
