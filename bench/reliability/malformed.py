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
* whether the worker is alive and how much it logged.
"""

from __future__ import annotations

import time

import counting
import fuzz
from counting import Figures
from projects import Project, wait_for
from scenarios import Context, dead_keys, finish, session, warm_up


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
    started = time.monotonic()
    bad = good = ctx.size(1000, 300)
    with session(ctx, system, "fuzz") as (server, project):
        worker = project.start_worker("-c", "2")
        warm_up(project, ctx.broker, server.url)
        messages = fuzz.interleaved(bad, good, ctx.broker)
        sent = {m.marker: m.field for m in messages if m.marker.startswith("bad-")}
        valid = [m.marker for m in messages if m.marker.startswith("valid-")]
        fuzz.publish_raw(ctx.broker, server.url, messages)
        wait_for(lambda: project.done_count("valid-") >= good, 120, interval=1.0)
        stable = [-1]

        def settled() -> bool:
            count = len(dead_keys(project) or {})
            same, stable[0] = count == stable[0], count
            return same

        wait_for(settled, 60, interval=3.0)
        alive = worker.poll() is None
        log_bytes = len(project.log_text().encode())
        project.stop(worker)
        runs = project.runs()
        dead = dead_keys(project)
        figures = finish(ctx, project, "malformed messages (fuzz)", valid, [], started)
        ran = {r.key for r in runs if r.event == "start" and r.key.startswith("bad-")}
        outcome = counting.count_fuzz(sent, dead, ran,
                                      queued_count(project, ctx.broker, server.url))
        figures.notes.append(outcome.line())
        figures.notes.append(f"worker log {log_bytes / 1024:.0f} KiB")
        if not alive:
            figures.notes.append(f"worker EXITED with code {worker.returncode}")
        figures.fuzz = outcome
        figures.ok = (figures.ok and alive and outcome.dead_first == outcome.sent)
    return figures
