"""Master failover under load (Redis Cluster, Sentinel): the master dies, a replica takes over.

The load of :func:`outages.broker_outage`: a worker with two prefork children runs
calls of 40 ms while a producer thread sends 40 calls a second (``apply_async``;
*accepted* when it returned, *refused* when it raised). After 5 s the master that
holds the queue is killed with ``SIGKILL`` and never comes back: the cluster (or
the sentinel) promotes one of its two replicas, the other follows the new master.
The producer goes on for 10 s more; then the queue drains and the ledger is
counted.

Two variants:

* ``failover``: asynchronous replication (the default). A call accepted in the
  last moments before the kill may not have reached the replica: such a loss is
  what Redis replication allows (docs/redis.md, *What asynchronous replication
  can lose*), counted and reported, not a failure of this run;
* ``failover-wait``: ``wait_for_replicas: 1``: an accepted call is on a replica,
  so none may be lost.

Time to recover: from the promotion to the first start of a call sent after it.
"""

from __future__ import annotations

import time

import counting
from counting import Fault, Figures
from outages import Producer
from projects import Project
from scenarios import Context, dead_keys, drain, finish, session
from servers import SERVERS

#: the producer's delay() waits through the failover instead of raising at once
PUBLISH_RETRY = {"max_retries": 60, "interval_start": 0.1, "interval_step": 0.2,
                 "interval_max": 0.5}


def _warm_up(project: Project, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    project.tasks.work.delay("probe-0", 0)
    while project.done_count("probe-") < 1:
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker never ran a probe:\n{project.log_text()[-3000:]}")
        time.sleep(0.2)


def master_failover(ctx: Context, system: str, wait: bool) -> Figures:
    """The scenario (module docstring)."""
    label = "master killed, replica promoted" + (" (wait_for_replicas=1)" if wait else "")
    if not hasattr(SERVERS[ctx.broker], "fail_over"):
        figures = Figures(label, ctx.broker, system, dead_lettered=None)
        figures.notes.append("n/a: no replicas to fail over to")
        return figures
    waits = {"wait_for_replicas": 1, "wait_for_replicas_timeout": 2.0} if wait else {}
    conf = {"broker_transport_options": waits, "task_publish_retry_policy": PUBLISH_RETRY,
            "broker_publish_timeout": 60}
    started = time.monotonic()
    with session(ctx, system, "failover-wait" if wait else "failover", **conf) as (
            server, project):
        worker = project.start_worker("-c", "2")
        _warm_up(project)
        producer = Producer(project)
        producer.start()
        time.sleep(5.0)
        ctx.say(f"  {system}: {ctx.broker} master killed")
        killed_at, promoted_at = server.fail_over()  # type: ignore[attr-defined]
        time.sleep(10.0)
        producer.stop()
        keys = list(producer.accepted)
        drain(project, keys)
        runs = project.runs()
        figures = finish(ctx, project, label, keys,
                         [Fault("outage", killed_at, promoted_at)], started)
        after = [k for k, at in producer.accepted.items() if at >= promoted_at]
        figures.recover_s = counting.resumed_after(runs, after, promoted_at)
        figures.notes.append(f"replica promoted {promoted_at - killed_at:.1f}s after the "
                             f"kill; {len(producer.refused)} calls refused at publish; "
                             f"slowest publish {producer.slowest:.1f}s")
        if not wait and figures.lost:
            figures.notes.append(f"{figures.lost} accepted calls lost with the master: "
                                 "asynchronous replication allows it")
            figures.ok = figures.explained.get("unexplained", 0) == 0
        if worker.poll() is not None:
            figures.notes.append(f"worker EXITED with code {worker.returncode}")
            figures.ok = False
        if dead_keys(project):
            figures.notes.append("dead letters after the failover")
    return figures
