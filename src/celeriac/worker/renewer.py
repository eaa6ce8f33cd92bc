"""Lease renewal from a process that runs no task: the supervisor, or a small renewer process.

:class:`Renewer` keeps, per owner process, the deliveries it holds and renews
all of them in one batched ``broker.renew`` per heartbeat, but only for owners
that are alive and running: an owner that is stopped (``SIGSTOP``: state ``T``
in ``/proc/<pid>/stat``) or gone is not renewed, so its leases lapse and its
messages are redelivered, exactly as if it had died. A lease the broker
refuses to renew is forgotten (another worker owns the message now).

* The prefork supervisor owns one :class:`Renewer` for all its children
  (told what each holds over their pipes, see
  :class:`~celeriac.worker.leases.SupervisorRenewal`).
* Under solo, threads and asyncio, :class:`ProcessRenewal` starts
  ``python -m celeriac.worker.renewer`` and writes ``update`` frames (what was
  held and settled since the last one; length-prefixed pickles) to its stdin;
  the first frame is its
  configuration (broker URL and options, lease, interval, owner pid). The
  renewer exits when its stdin closes or its owner is gone, and dies with it
  (``PR_SET_PDEATHSIG``).

Why a process and not a thread: a task holding the GIL (C code that does not
release it) freezes every thread of its process, heartbeats included; the task
would then run again elsewhere while it still runs. A process has its own GIL.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

from .. import retry
from ..brokers.base import Broker, Delivery
from ..brokers.registry import broker_for_url
from ..exceptions import OperationalError
from .leases import Lease, delivery_of, update_frame
from .outage import QUICK_CALL, Weather

if TYPE_CHECKING:
    from ..app.base import Celery
    from .leases import LeaseKeeper

logger = logging.getLogger("celeriac.worker.leases")

RUNNING, STOPPED, GONE = "running", "stopped", "gone"
_HEADER = struct.Struct(">I")
#: seconds a worker waits for its renewer process to be up
READY_TIMEOUT = 60.0
#: seconds between renewal attempts while the broker is failing (renewed soon after it
#: is back, before leases that survived the outage lapse)
OUTAGE_RETRY = 1.0


def process_state(pid: int) -> str:
    """``running``, ``stopped`` (SIGSTOP, traced) or ``gone`` (exited, zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except FileNotFoundError:
        return GONE
    except (OSError, IndexError):  # no /proc (not Linux): existence is all we can check
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return GONE
        except PermissionError:
            return RUNNING
        return RUNNING
    if state in (b"Z", b"X", b"x"):
        return GONE
    if state in (b"T", b"t"):
        return STOPPED
    return RUNNING


class Renewer:
    """Renews the leases that owner processes hold, while they live and run."""

    def __init__(self, broker: Broker, interval: float) -> None:
        self.broker = broker
        self.interval = max(0.05, interval)
        self.held: dict[int, dict[str, Lease]] = {}
        self._stopped: set[int] = set()
        self._next = time.monotonic() + self.interval

    def hold(self, pid: int, leases: list[Lease]) -> None:
        book = self.held.setdefault(pid, {})
        for lease in leases:
            book[lease[0]] = lease

    def drop(self, pid: int, settled: list[tuple[str, str]]) -> None:
        """Forget ``(tag, token)`` leases of ``pid`` (a newer lease of the tag stays)."""
        book = self.held.get(pid, {})
        for tag, token in settled:
            held = book.get(tag)
            if held is not None and held[1] == token:
                del book[tag]

    def forget(self, pid: int) -> list[Delivery]:
        """Stop renewing for ``pid`` (it exited); return what it held."""
        self._stopped.discard(pid)
        return [delivery_of(lease) for lease in self.held.pop(pid, {}).values()]

    def apply(self, pid: int, frame: tuple[Any, ...]) -> None:
        """An ``("update", held, settled)`` message from ``pid`` (see ``update_frame``)."""
        if frame[0] == "update":
            self.hold(pid, frame[1])
            self.drop(pid, frame[2])

    def due(self) -> bool:
        return time.monotonic() >= self._next

    def renew(self) -> None:
        """Renew the leases of every running owner in one call."""
        self._next = time.monotonic() + self.interval
        batch: list[tuple[int, Delivery]] = []
        for pid, book in self.held.items():
            if not book:
                continue
            state = process_state(pid)
            if state != RUNNING:
                if pid not in self._stopped:
                    self._stopped.add(pid)
                    logger.warning("Process %d is %s: not renewing its %d lease(s)", pid,
                                   state, len(book))
                continue
            if pid in self._stopped:
                self._stopped.discard(pid)
                logger.warning("Process %d runs again: renewing its leases", pid)
            batch.extend((pid, delivery_of(lease)) for lease in book.values())
        if not batch:
            return
        try:
            with retry.quick(QUICK_CALL):  # never stalls the supervisor's loop
                results = self.broker.renew([d for _, d in batch])
        except OperationalError as exc:  # an outage (logged once by the process's watch):
            logger.debug("Lease renewal failed: %s", exc)  # try again in a second
            self._next = min(self._next, time.monotonic() + OUTAGE_RETRY)
            return
        except Exception:
            logger.exception("Lease renewal failed; will retry")
            return
        for (pid, d), ok in zip(batch, results, strict=False):
            if not ok:  # settled meanwhile, or lost (the owner finds out and logs it)
                self.drop(pid, [(d.tag, d.token)])
                logger.debug("Not leased any more: %s[%s]", d.message.task_name,
                             d.message.task_id)


# -- the renewer process -------------------------------------------------------------------
def write_frame(stream: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def read_frames(buffer: bytearray) -> list[Any]:
    """Take the complete frames off the front of ``buffer``."""
    frames = []
    while len(buffer) >= _HEADER.size:
        (size,) = _HEADER.unpack_from(buffer)
        if len(buffer) < _HEADER.size + size:
            break
        frames.append(pickle.loads(bytes(buffer[_HEADER.size:_HEADER.size + size])))
        del buffer[:_HEADER.size + size]
    return frames


class ProcessRenewal:
    """Renews one worker process's leases from a separate renewer process."""

    def __init__(self, app: Celery, interval: float) -> None:
        conf = app.conf
        self.config = {
            "url": app.broker_url, "lease_seconds": float(conf.worker_lease_seconds),
            "options": app._broker_options(), "interval": max(0.05, interval),
            "owner": os.getpid(), "log_format": conf.worker_log_format,
            "log_level": logging.getLogger().getEffectiveLevel()}
        self.proc: subprocess.Popen[bytes] | None = None
        self.keeper: LeaseKeeper | None = None
        self._lock = threading.Lock()

    def launch(self) -> None:
        """Start the renewer process now (from the main thread, so a failure stops the
        worker at start-up and the renewer's death signal is tied to that thread)."""
        with self._lock:
            if self.proc is None:
                self._spawn()

    def start(self, keeper: LeaseKeeper) -> None:
        self.keeper = keeper
        self.launch()

    def _spawn(self) -> None:
        """Start the renewer and wait until it is connected (it writes one byte), so no
        task starts before its leases can be renewed."""
        # the renewer imports the celeriac this process runs, wherever it came from
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
        proc = self.proc = subprocess.Popen(
            [sys.executable, "-m", "celeriac.worker.renewer"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, close_fds=True, env=env)
        assert proc.stdin is not None and proc.stdout is not None
        write_frame(proc.stdin, self.config)
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
        if not ready or proc.stdout.read(1) != b"R":
            proc.kill()
            raise RuntimeError(f"the lease renewer process did not start (exit code "
                               f"{proc.wait(5)})")
        logger.debug("Lease renewer process %d started", proc.pid)

    def _send(self, frame: tuple[Any, ...]) -> None:
        with self._lock:
            if self.proc is None:
                return
            try:
                assert self.proc.stdin is not None
                write_frame(self.proc.stdin, frame)
            except (OSError, ValueError):
                logger.error("The lease renewer process exited (%s); starting a new one",
                             self.proc.poll())
                self._spawn()
                held = self.keeper.held() if self.keeper is not None else []
                assert self.proc.stdin is not None
                write_frame(self.proc.stdin, update_frame(held, []))

    def update(self, held: list[Delivery], dropped: list[Delivery]) -> None:
        self._send(update_frame(held, dropped))

    def stop(self) -> None:
        with self._lock:
            proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


def _die_with_owner() -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PDEATHSIG
        except (OSError, AttributeError):
            pass


def main() -> int:
    """``python -m celeriac.worker.renewer``: renew the owner's leases until told to stop."""
    _die_with_owner()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the owner decides
    fd = sys.stdin.fileno()
    buffer = bytearray()
    config: dict[str, Any] | None = None
    while config is None:
        data = os.read(fd, 65536)
        if not data:
            return 0
        buffer += data
        frames = read_frames(buffer)
        config = frames[0] if frames else None
    logging.basicConfig(format=config["log_format"], level=config["log_level"])
    retry.watch_outages(Weather(quiet=True))  # the worker it renews for logs outages
    broker = broker_for_url(config["url"], lease_seconds=config["lease_seconds"],
                            options=config["options"])
    owner, renewer = int(config["owner"]), Renewer(broker, config["interval"])
    try:
        os.write(sys.stdout.fileno(), b"R")  # connected: the owner may start tasks
    except BrokenPipeError:  # the owner died while we connected: nothing to renew
        broker.close()
        return 0
    for frame in read_frames(buffer):
        renewer.apply(owner, frame)
    while process_state(owner) != GONE:
        wait = max(0.0, renewer._next - time.monotonic())
        readable, _, _ = select.select([fd], [], [], min(wait, 1.0))
        if readable:
            data = os.read(fd, 1 << 16)
            if not data:
                break  # the owner closed the pipe: it stopped or died
            buffer += data
            for frame in read_frames(buffer):
                renewer.apply(owner, frame)
        if renewer.due():
            renewer.renew()
    broker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
