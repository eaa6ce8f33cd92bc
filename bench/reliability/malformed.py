"""The fuzz scenario: 1,000 malformed messages interleaved with 1,000 valid ones, sent raw.

The messages come from :mod:`fuzz` (every field of the envelope, headers,
properties and body, cycled) and go onto the wire with
:func:`fuzz.publish_raw` while a worker (two prefork children) runs. The run
waits until every valid call has finished and the dead-letter count is stable,
stops the worker, and counts:

* valid calls: lost / duplicated / dead-lettered, as in every scenario;
* malformed ones (:func:`counting.count_fuzz`): dead-lettered on their first
  delivery (the goal), dead-lettered later, ran (a body that was run from a
  message that breaks the protocol), still queued, or vanished (dropped with no
  trace: Celery's behaviour, which acknowledges what it cannot decode or run);
* whether the worker stayed alive (one that exits is started again, as a
  service manager would, and the exits are counted) and how much it logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import counting
import fuzz
from counting import Figures
from projects import Project, wait_for
from scenarios import Context, dead_keys, finish, session, warm_up

#: a worker that exits is started again (as a service manager would), this many times
MAX_RESTARTS = 30
#: ... and the run gives the valid calls at most this long
MAX_WAIT = 180.0


def queued_count(project: Project, broker: str, url: str) -> int:
    """Messages still in the queue (ready, leased or delayed) once the worker stopped."""
    if project.system == "celeriac":
        stats = project.tasks.app.broker.stats(fuzz.QUEUE)
        return int(stats.ready + stats.leased + stats.delayed)
    if broker == "redis":
        import redis

        client = redis.Redis.from_url(url)
        try:
            return int(client.llen(fuzz.QUEUE)) + int(client.hlen("unacked"))
        finally:
            client.close()
    if broker == "amqp":
        import amqp

        conn = amqp.Connection(host=url.split("@", 1)[1].split("/", 1)[0],
                               userid="guest", password="guest")
        conn.connect()
        try:
            return int(conn.channel().queue_declare(fuzz.QUEUE, passive=True).message_count)
        finally:
            conn.close()
    return 0


def fuzz_messages(ctx: Context, system: str) -> Figures:
    """The scenario (module docstring)."""
    return _fuzz(ctx, system, "malformed messages (fuzz)")


def fuzz_without_stoppers(ctx: Context, system: str) -> Figures:
    """The same without the cases that stop a Celery worker for good
    (:func:`fuzz.stops_celery`), to see what Celery does with every other field."""
    return _fuzz(ctx, system, "fuzz without worker-stopping names/ids", fuzz.stops_celery)


def _fuzz(ctx: Context, system: str, label: str,
          skip: Callable[[fuzz.Case], bool] | None = None) -> Figures:
    started = time.monotonic()
    bad = good = 1000  # the same in --quick: cheap, and the figure the suite is for
    with session(ctx, system, "fuzz" if skip is None else "fuzz-skip") as (server, project):
        worker = project.start_worker("-c", "2")
        warm_up(project, ctx.broker, server.url)
        messages = fuzz.interleaved(bad, good, ctx.broker, skip)
        sent = {m.marker: m.field for m in messages if m.marker.startswith("bad-")}
        valid = [m.marker for m in messages if m.marker.startswith("valid-")]
        fuzz.publish_raw(ctx.broker, server.url, messages)
        crashes = 0
        last, last_change = -1, time.monotonic()
        give_up = time.monotonic() + MAX_WAIT
        while (time.monotonic() - last_change < 30 and crashes < MAX_RESTARTS
               and time.monotonic() < give_up):
            done = project.done_count("valid-")
            if done >= good:
                break
            if done != last:
                last, last_change = done, time.monotonic()
            if worker.poll() is not None:  # a service manager would start it again
                crashes += 1
                worker = project.start_worker("-c", "2", name=f"w{crashes + 1}")
                last_change = time.monotonic()
            time.sleep(1.0)
        stable = [-1]

        def settled() -> bool:
            count = len(dead_keys(project) or {})
            same, stable[0] = count == stable[0], count
            return same

        wait_for(settled, 60, interval=3.0)
        alive = worker.poll() is None
        log_bytes = sum(len(project.log_text(f"w{i + 1}").encode()) for i in range(crashes + 1))
        project.stop(worker)
        runs = project.runs()
        dead = dead_keys(project)
        figures = finish(ctx, project, label, valid, [], started)
        ran = {r.key for r in runs if r.event == "start" and r.key.startswith("bad-")}
        # the queue also holds valid calls that never ran (a dead worker's backlog)
        queued = max(0, queued_count(project, ctx.broker, server.url) - figures.lost)
        outcome = counting.count_fuzz(sent, dead, ran, queued)
        figures.notes.append(outcome.line())
        figures.notes.append(f"worker log {log_bytes / 1024:.0f} KiB")
        if crashes:
            figures.notes.append(f"worker EXITED {crashes} time(s) and was started again")
        if not alive:
            figures.notes.append(f"worker EXITED with code {worker.returncode}")
        figures.fuzz = outcome
        figures.ok = (figures.ok and alive and not crashes
                      and outcome.dead_first == outcome.sent)
    return figures
