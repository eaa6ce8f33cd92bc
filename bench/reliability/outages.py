"""Broker restart under load: the private server is killed, kept down, and started again.

A worker (two prefork children) runs calls of 40 ms while a producer thread in
this process sends 40 calls a second through the system's own client
(``apply_async``) before, during and after the outage; a call counts as
*accepted* when ``apply_async`` returned, *refused* when it raised (the
producer saw the error: not a loss). The server is killed (``SIGKILL``; for
PostgreSQL ``pg_ctl stop -m immediate``), kept down for ``seconds``, started
again on the same port and data directory (Redis replays its AOF), and the
producer goes on for 10 s more. Then the queue drains and the ledger is counted.

Time to recover here is from the moment the server accepts connections again
to the first start of a call the producer sent after that moment: the worker
consumes again. The worker must still be alive at the end.

A duplicate is put down to the outage when one of its finishes fell between one
second before the kill (an acknowledgement travels with the worker's next broker
call, so a body that finished just before the kill may not have been settled)
and the moment the worker consumed again (an outcome buffered through the
outage can only be settled then; on RabbitMQ the deliveries of the dead
connection are redelivered whatever the worker buffered).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import counting
from counting import Fault, Figures
from projects import Project
from scenarios import Context, dead_keys, drain, finish, session, warm_up
from servers import SERVERS, outage

RATE = 40.0
TASK_MS = 40
#: a finished call's acknowledgement goes out with the worker's next broker call
SETTLE = 1.0


@dataclass
class Producer:
    """Sends ``work(key, TASK_MS)`` calls at ``RATE`` per second from a thread."""

    project: Project
    accepted: dict[str, float] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    slowest: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="producer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        work = self.project.tasks.work
        i = 0
        while not self._stop.is_set():
            key = f"p-{i}"
            i += 1
            began = time.monotonic()
            try:
                work.apply_async((key, TASK_MS))
            except Exception:
                self.refused.append(key)
            else:
                self.accepted[key] = time.time()
            spent = time.monotonic() - began
            self.slowest = max(self.slowest, spent)
            self._stop.wait(max(0.0, 1.0 / RATE - spent))

    def stop(self, timeout: float = 120.0) -> None:
        """Stop sending; a call still blocked in ``apply_async`` gets ``timeout`` s."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


def broker_outage(ctx: Context, system: str, seconds: float) -> Figures:
    """The scenario (module docstring); ``seconds`` the server stays down."""
    label = f"broker down {seconds:g}s"
    if not SERVERS[ctx.broker].restartable:
        figures = Figures(label, ctx.broker, system, dead_lettered=None)
        figures.notes.append("n/a: embedded, no server to restart")
        return figures
    started = time.monotonic()
    with session(ctx, system, f"outage{seconds:g}") as (server, project):
        worker = project.start_worker("-c", "2")
        warm_up(project, ctx.broker, server.url)
        producer = Producer(project)
        producer.start()
        time.sleep(5.0)
        ctx.say(f"  {system}: {ctx.broker} down for {seconds:g}s")
        down_at, up_at = outage(server, seconds)
        time.sleep(10.0)
        producer.stop()
        keys = list(producer.accepted)
        drain(project, keys)
        runs = project.runs()
        after = [k for k, at in producer.accepted.items() if at >= up_at]
        recover = counting.resumed_after(runs, after, up_at)
        # outcomes are unsettled from one settle turn before the kill until the worker
        # consumes again: a body finished in that window may run again (module docstring)
        fault = Fault("outage", down_at - SETTLE, up_at + (recover or 0.0))
        figures = finish(ctx, project, label, keys, [fault], started)
        figures.recover_s = recover
        figures.notes.append(f"down {up_at - down_at:.1f}s; {len(producer.refused)} calls "
                             f"refused at publish; slowest publish {producer.slowest:.1f}s")
        if worker.poll() is not None:
            figures.notes.append(f"worker EXITED with code {worker.returncode}")
            figures.ok = False
        if dead_keys(project):
            figures.notes.append("dead letters after the outage")
    return figures
