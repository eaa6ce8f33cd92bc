"""Three schedulers, one store, a simulated hour: every fire enqueued exactly once.

One scheduler crashes right after claiming a fire (so the claim must be
recovered with the same task id), and the leader at half time is paused for
2.5 lease periods and then resumes still believing it leads (it runs its
stale work before looking at the lease). Entries with ``missed="all"`` (and a
60 s lateness) must have every fire time of the hour sent exactly once;
``latest``/``skip`` entries may only miss fires inside the two failover gaps.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from celeriac.beat.scheduler import Scheduler
from celeriac.brokers.memory.beat_store import MemoryStore
from celeriac.brokers.sqlite.beat_store import SQLiteStore
from celeriac.schedules import crontab
from celeriac.schedules.clock import ManualClock
from celeriac.schedules.entries import spec_from_conf
from celeriac.schedules.policy import fire_task_id
from celeriac.schedules.store import ScheduleStore

UTC = timezone.utc
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LEASE, STEP = 10.0, 0.25
ALL = {"missed": "all", "max_lateness": 60}


def twenty_entries() -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {
        "every-1s-all": {"schedule": 1.0, **ALL},
        "every-1s-latest": {"schedule": 1.0},
        "every-1s-skip": {"schedule": 1.0, "missed": "skip"},
        "every-10s-all": {"schedule": timedelta(seconds=10), **ALL},
        "every-10s-latest": {"schedule": 10},
        "every-10s-queue": {"schedule": 10.0, "options": {"queue": "beat", "expires": 5},
                            **ALL},
        "every-1m-all": {"schedule": 60, **ALL},
        "every-1m-latest": {"schedule": 60.0},
        "every-1m-args": {"schedule": 60, "args": (1, 2), "kwargs": {"k": "v"}, **ALL},
        "every-7s": {"schedule": 7, **ALL},
        "every-13s": {"schedule": 13, **ALL},
        "every-30s": {"schedule": 30},
        "every-45s": {"schedule": 45, **ALL},
        "cron-every-minute": {"schedule": crontab(), **ALL},
        "cron-5m": {"schedule": crontab(minute="*/5"), **ALL},
        "cron-15m": {"schedule": crontab(minute="*/15")},
        "cron-hourly": {"schedule": crontab(minute=0, hour="*")},
        "cron-7-37": {"schedule": crontab(minute="7,37"), **ALL},
        "cron-steps": {"schedule": crontab(minute="0-58/2", hour="9", day_of_week="mon-fri"),
                       **ALL},
        "cron-weekend": {"schedule": crontab(minute="*", day_of_week="sat,sun"), **ALL},
    }
    return {name: {"task": f"tasks.{name}", **entry} for name, entry in entries.items()}


class Crash(BaseException):
    """A process death: not an Exception, so nothing in beat catches it."""


class Conf(dict):
    __getattr__ = dict.get


@dataclass
class Sent:
    node: str
    task: str
    task_id: str
    headers: dict[str, Any]
    options: dict[str, Any]
    args: list[Any]
    kwargs: dict[str, Any]
    at: datetime


@dataclass
class FakeApp:
    """Just what beat needs from an app: ``conf`` and ``send_task``."""

    conf: Conf
    node: str
    clock: ManualClock
    log: list[Sent]
    crash_next_send: bool = False
    crashed_task_id: str | None = None
    sent_by_me: int = field(default=0)

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, *, task_id: str,
                  headers: dict[str, Any], **options: Any) -> str:
        if self.crash_next_send:
            self.crashed_task_id = task_id
            raise Crash(self.node)
        self.log.append(Sent(self.node, name, task_id, headers, options, list(args or ()),
                             dict(kwargs or {}), self.clock.now()))
        self.sent_by_me += 1
        return task_id


@dataclass
class Node:
    app: FakeApp
    sched: Scheduler
    wake: datetime
    state: str = "new"  # new | up | dead | paused
    resume_at: datetime | None = None


def expected_fires(conf_entries: dict[str, dict[str, Any]], anchor: datetime,
                   end: datetime) -> dict[str, list[datetime]]:
    expected = {}
    for name, entry in conf_entries.items():
        sched = spec_from_conf(name, entry).schedule
        fires, t = [], anchor
        while True:
            t = sched.next_fire_after(t, anchor=anchor, tz=UTC)
            if t is None or t > end:
                break
            fires.append(t)
        expected[name] = fires
    return expected


def run_cluster(store_factory: Any, minutes: int) -> dict[str, Any]:
    clock = ManualClock(START)
    log: list[Sent] = []
    entries = twenty_entries()
    conf = Conf(beat_schedule=entries, beat_lease_seconds=LEASE, beat_max_loop_interval=5)
    nodes: list[Node] = []
    for i, name in enumerate("abc"):
        app = FakeApp(conf, name, clock, log)
        sched = Scheduler(app, store_factory(), clock=clock, node_id=name)
        nodes.append(Node(app, sched, START + timedelta(seconds=0.25 * i)))
    end = START + timedelta(minutes=minutes)
    kill_at, pause_at = START + timedelta(minutes=minutes / 4), START + timedelta(
        minutes=minutes / 2)
    events: dict[str, datetime] = {}
    while clock.now() < end:
        now = clock.now()
        if "kill" not in events and now >= kill_at:
            leader = next(n for n in nodes if n.sched.is_leader and n.state == "up")
            leader.app.crash_next_send, events["kill"] = True, now
        if "pause" not in events and now >= pause_at:
            leader = next(n for n in nodes if n.sched.is_leader and n.state == "up")
            leader.state, leader.resume_at = "paused", now + timedelta(seconds=2.5 * LEASE)
            events["pause"] = now
        for node in nodes:
            if node.state == "paused" and node.resume_at and now >= node.resume_at:
                node.state = "up"
                node.sched.run_due(now)  # wakes up believing it still leads
            if node.state == "new" and now >= node.wake:
                node.sched.setup()  # staggered starts: only the first one inserts entries
                node.state = "up"
            if node.state != "up" or now < node.wake:
                continue
            try:
                delay = node.sched.tick()
            except Crash:
                node.state = "dead"
                continue
            node.wake = now + timedelta(seconds=max(delay, STEP))
        clock.advance(STEP)
    return {"log": log, "nodes": nodes, "events": events, "entries": entries,
            "expected": expected_fires(entries, START, end - timedelta(seconds=2)),
            "end": end}


def memory_store() -> Any:
    shared = MemoryStore()
    return lambda: shared


def check_exactly_once(result: dict[str, Any]) -> None:
    log: list[Sent] = result["log"]
    ids = Counter(s.task_id for s in log)
    duplicates = [task_id for task_id, n in ids.items() if n > 1]
    assert duplicates == [], f"{len(duplicates)} fires sent twice"
    assert all(s.headers == {"celery_beat_task": True} for s in log)
    gaps = [(at - timedelta(seconds=1), at + timedelta(seconds=LEASE + LEASE / 3 + 1.5))
            for at in result["events"].values()]
    by_id = {}
    for name, fires in result["expected"].items():
        for fire in fires:
            by_id[fire_task_id(name, fire)] = (name, fire)
    unknown = [s for s in log if s.task_id not in by_id and s.at < result["end"] - timedelta(
        seconds=2)]
    assert unknown == [], "sent a fire time that is not in the schedule"
    total = 0
    for name, fires in result["expected"].items():
        sent = {fire for fire in fires if fire_task_id(name, fire) in ids}
        total += len(sent)
        if result["entries"][name].get("missed") == "all":
            assert sent == set(fires), f"{name}: {len(fires) - len(sent)} fires missing"
        else:
            missing = set(fires) - sent
            assert all(any(lo <= f <= hi for lo, hi in gaps) for f in missing), name
    assert total > 0


def test_three_schedulers_one_hour_exactly_once() -> None:
    result = run_cluster(memory_store(), minutes=60)
    check_exactly_once(result)
    log, nodes = result["log"], result["nodes"]
    assert len(log) > 12_000  # the hour really was scheduled (about 12.7k fires)
    assert [n.state for n in nodes].count("dead") == 1
    assert sum(1 for n in nodes if n.app.sent_by_me) >= 2, "work moved after the kill"
    [dead] = [n for n in nodes if n.state == "dead"]
    [resent] = [s for s in log if s.task_id == dead.app.crashed_task_id]
    assert resent.node != dead.app.node, "the claim left by the crashed scheduler was re-sent"
    assert resent.at >= result["events"]["kill"] + timedelta(seconds=30)  # claim timeout
    one = next(s for s in log if s.task == "tasks.every-1m-args")
    assert one.args == [1, 2] and one.kwargs == {"k": "v"}
    queued = next(s for s in log if s.task == "tasks.every-10s-queue")
    assert queued.options == {"queue": "beat", "expires": 5}


def test_three_schedulers_share_a_sqlite_file(tmp_path: Any) -> None:
    path = tmp_path / "beat.sqlite3"
    result = run_cluster(lambda: SQLiteStore(f"sqlite:///{path}?durability=fast"), minutes=8)
    check_exactly_once(result)
    assert [n.state for n in result["nodes"]].count("dead") == 1


def test_two_leaders_at_once_never_duplicate() -> None:
    """The lease is bypassed: both schedulers do the work every tick; claims fence them."""
    clock = ManualClock(START)
    log: list[Sent] = []
    store = MemoryStore()
    conf = Conf(beat_schedule=twenty_entries())
    scheds = [Scheduler(FakeApp(conf, n, clock, log), store, clock=clock, node_id=n)
              for n in "xy"]
    for sched in scheds:
        sched.setup()
    for i in range(int(600 / STEP)):
        for sched in scheds if i % 3 else scheds[::-1]:  # each wins some races
            sched.run_due(clock.now())
        clock.advance(STEP)
    ids = Counter(s.task_id for s in log)
    assert ids and max(ids.values()) == 1
    assert {s.node for s in log} == {"x", "y"}


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
def test_claim_left_by_a_dead_scheduler_is_resent_with_the_same_id(
        store_kind: str, tmp_path: Any) -> None:
    clock = ManualClock(START)
    log: list[Sent] = []
    store: ScheduleStore = (MemoryStore() if store_kind == "memory"
                            else SQLiteStore(f"sqlite:///{tmp_path / 'b.db'}"))
    conf = Conf(beat_schedule={"tick": {"task": "t", "schedule": 60}}, beat_claim_timeout=30)
    dying = Scheduler(FakeApp(conf, "dying", clock, log, crash_next_send=True), store,
                      clock=clock, node_id="dying")
    dying.setup()
    clock.advance(60)
    with pytest.raises(Crash):
        dying.tick()
    [claim] = store.list_fires("tick")
    assert claim.state == "claimed" and log == []
    heir = Scheduler(FakeApp(conf, "heir", clock, log), store, clock=clock, node_id="heir")
    clock.advance(LEASE + 1)
    watch_from = clock.now()
    while clock.now() < watch_from + timedelta(seconds=29):  # the heir watches the claim
        heir.tick()
        clock.advance(5)
    assert log == [], "not before it watched the claim unchanged for the claim timeout"
    clock.set(watch_from + timedelta(seconds=30))
    heir.tick()
    assert [s.task_id for s in log] == [claim.task_id]
    assert [f.state for f in store.list_fires("tick")] == ["sent"]
    assert store.get_entry("tick").total_run_count == 1  # type: ignore[union-attr]


class FlakyApp(FakeApp):
    """send_task fails (a broker outage) while ``down`` is set."""

    down: bool = False

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, *, task_id: str,
                  headers: dict[str, Any], **options: Any) -> str:
        if self.down:
            raise ConnectionError("broker unreachable")
        return super().send_task(name, args, kwargs, task_id=task_id, headers=headers,
                                 **options)


def test_broker_outage_claims_are_resent_once_it_is_back() -> None:
    """Reliability plan C5: no fire stays recorded-but-not-enqueued once the broker is back."""
    clock = ManualClock(START)
    log: list[Sent] = []
    conf = Conf(beat_schedule={"e": {"task": "t", "schedule": 5, "missed": "all",
                                     "max_lateness": 600}}, beat_claim_timeout=30)
    app = FlakyApp(conf, "solo", clock, log)
    sched = Scheduler(app, MemoryStore(), clock=clock, node_id="solo")
    sched.setup()

    def run(seconds: float) -> None:
        end = clock.now() + timedelta(seconds=seconds)
        while clock.now() < end:
            clock.advance(max(sched.tick(), STEP))

    run(20)
    app.down = True
    run(60)
    claimed = [f for f in sched.store.list_fires("e") if f.state == "claimed"]
    assert len(claimed) >= 10, "fires during the outage were claimed, not lost"
    app.down = False
    run(45)
    fires = sched.store.list_fires("e")
    assert all(f.state == "sent" for f in fires)
    sent_ids = [s.task_id for s in log]
    assert sorted(sent_ids) == sorted(f.task_id for f in fires)
    assert len(set(sent_ids)) == len(sent_ids)
