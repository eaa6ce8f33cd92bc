"""Scheduler failover on a simulated clock: a stand-by takes over within the grace, every
fire the policy skips is named in a warning, and a live claimer's fire is never re-sent.

Three schedulers share a memory or SQLite store; the leader "dies" (stops ticking,
keeps its lease). Then: claims held by a scheduler whose publish is slow, whose mark
fails, or whose clock disagrees are never taken over, while a dead claimer's claim is
re-sent once another scheduler has watched it unchanged for ``beat_claim_timeout``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from typing import Any

import pytest

from celeriac.beat.scheduler import Scheduler
from celeriac.brokers.memory.beat_store import MemoryStore
from celeriac.brokers.sqlite.beat_store import SQLiteStore
from celeriac.schedules.clock import ManualClock
from celeriac.schedules.policy import TAKEOVER_GRACE, fire_task_id
from celeriac.schedules.store import ScheduleStore

UTC = timezone.utc
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
STEP, LEASE = 0.1, 10.0
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?\+00:00")


class Conf(dict):
    __getattr__ = dict.get


@dataclass
class Sent:
    node: str
    task_id: str
    at: datetime


@dataclass
class FakeApp:
    """What beat needs of an app; ``during_send`` runs inside a publish (a slow broker)."""

    conf: Conf
    node: str
    clock: ManualClock
    log: list[Sent]
    during_send: Callable[[], None] | None = None

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, *, task_id: str,
                  headers: dict[str, Any], **options: Any) -> str:
        if self.during_send is not None:
            self.during_send()
        self.log.append(Sent(self.node, task_id, self.clock.now()))
        return task_id


@pytest.fixture(params=["memory", "sqlite"])
def store_factory(request: Any, tmp_path: Any) -> Iterator[Callable[[], ScheduleStore]]:
    made: list[ScheduleStore] = []
    shared = MemoryStore()

    def factory() -> ScheduleStore:
        store: ScheduleStore = (shared if request.param == "memory" else
                                SQLiteStore(f"sqlite:///{tmp_path / 'beat.sqlite3'}"
                                            "?durability=fast"))
        made.append(store)
        return store

    yield factory
    for store in made:
        store.close()


ENTRIES = {
    "every-1s": {"task": "t.one", "schedule": 1.0},
    "every-1s-all": {"task": "t.all", "schedule": 1.0, "missed": "all", "max_lateness": 60},
    "every-3s-skip": {"task": "t.skip", "schedule": 3.0, "missed": "skip"},
    "every-10s": {"task": "t.ten", "schedule": 10.0},
}


def named_in_warnings(records: list[logging.LogRecord], entry: str) -> set[datetime]:
    named: set[datetime] = set()
    for record in records:
        text = record.getMessage()
        if text.startswith(f"beat: {entry!r}: missed fires not sent"):
            named |= {datetime.fromisoformat(s) for s in STAMP.findall(text.split("): ", 1)[1])}
    return named


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def simulate_failover(store_factory: Callable[[], ScheduleStore]) -> dict[str, Any]:
    """Three schedulers for a simulated minute; the leader dies at 15.35 s and at 40.8 s."""
    beat_logger = logging.getLogger("celeriac.beat")
    captured, level = Captured(), beat_logger.level
    beat_logger.addHandler(captured)
    beat_logger.setLevel(logging.INFO)
    try:
        clock, log = ManualClock(START), []
        conf = Conf(beat_schedule=ENTRIES, beat_lease_seconds=LEASE)
        nodes = []
        for name in "abc":
            sched = Scheduler(FakeApp(conf, name, clock, log), store_factory(), clock=clock,
                              node_id=name)
            sched.setup()
            nodes.append([sched, START, True])
        kills: list[datetime] = []
        while clock.now() < START + timedelta(seconds=60):
            now = clock.now()
            if (not kills and now >= START + timedelta(seconds=15.35)) or (
                    len(kills) == 1 and now >= START + timedelta(seconds=40.8)):
                victim = next(n for n in nodes if n[2] and n[0].is_leader)
                victim[2] = False  # SIGKILL: no more ticks, the lease stays held
                kills.append(now)
            for node in nodes:
                if node[2] and now >= node[1]:
                    node[1] = now + timedelta(seconds=max(node[0].tick(), STEP))
            clock.advance(STEP)
    finally:
        beat_logger.removeHandler(captured)
        beat_logger.setLevel(level)
    return {"log": log, "kills": kills, "records": captured.records}


def check_failover(result: dict[str, Any]) -> None:
    """Each fire sent once or named skipped; the silence one period plus the grace at most."""
    log, kills, records = result["log"], result["kills"], result["records"]
    assert len(kills) == 2
    ids = Counter(s.task_id for s in log)
    assert max(ids.values()) == 1, "a fire sent twice"
    for name, spec in ENTRIES.items():
        every = spec["schedule"]
        grid = [START + timedelta(seconds=every * k) for k in range(1, int(57 / every))]
        named = named_in_warnings(records, name)
        sent = {f for f in grid if fire_task_id(name, f) in ids}
        assert set(grid) <= sent | named, f"{name}: a fire lost without a warning"
        assert not sent & named, f"{name}: a sent fire named as skipped"
        if spec.get("missed") == "all":
            assert sent == set(grid)
    one_second = sorted(s.at for s in log if s.task_id in {
        fire_task_id("every-1s", START + timedelta(seconds=k)) for k in range(60)})
    gap = max((b - a).total_seconds() for a, b in pairwise(one_second))
    assert gap <= 1 + TAKEOVER_GRACE + 2 * STEP, "takeover slower than one grace and one tick"
    assert gap < LEASE / 2
    takeovers = [r for r in records if "taking over from the leader" in r.getMessage()]
    assert takeovers and all(r.levelno == logging.WARNING for r in takeovers)
    for kill in kills:  # once the dead leader's lease lapsed, one scheduler does the work
        later = {s.node for s in log if kill + timedelta(seconds=LEASE + 2) < s.at
                 <= kill + timedelta(seconds=LEASE + 12)}
        assert len(later) == 1, later


def test_standby_takes_over_within_the_grace_and_names_every_skipped_fire(
        store_factory: Callable[[], ScheduleStore]) -> None:
    check_failover(simulate_failover(store_factory))


def test_nothing_is_skipped_when_the_takeover_is_within_the_lateness(
        store_factory: Callable[[], ScheduleStore], caplog: Any) -> None:
    """The grace is at most half the fire's max lateness: every-second fires stay on time."""
    caplog.set_level(logging.WARNING, logger="celeriac.beat")
    clock, log = ManualClock(START), []
    conf = Conf(beat_schedule={"e": {"task": "t", "schedule": 1.0}}, beat_lease_seconds=LEASE)
    a = Scheduler(FakeApp(conf, "a", clock, log), store_factory(), clock=clock, node_id="a")
    b = Scheduler(FakeApp(conf, "b", clock, log), store_factory(), clock=clock, node_id="b")
    a.setup()
    b.setup()
    wake = {"a": START, "b": START}
    while clock.now() < START + timedelta(seconds=30):
        for name, sched in (("a", a), ("b", b)):
            if name == "a" and clock.now() > START + timedelta(seconds=10.5):
                continue
            if clock.now() >= wake[name]:
                wake[name] = clock.now() + timedelta(seconds=max(sched.tick(), STEP))
        clock.advance(STEP)
    fires = sorted(s.task_id for s in log)
    expected = sorted(fire_task_id("e", START + timedelta(seconds=k)) for k in range(1, 30))
    assert fires == expected
    assert not any("missed fires" in r.getMessage() for r in caplog.records)


# -- claims in flight ----------------------------------------------------------------------
FIRE_60 = fire_task_id("e", START + timedelta(seconds=60))


def senders(log: list[Sent], task_id: str = FIRE_60) -> list[str]:
    return [s.node for s in log if s.task_id == task_id]


def two(store: ScheduleStore, clock: ManualClock, log: list[Sent], timeout: float = 30,
        b_clock: ManualClock | None = None) -> tuple[Scheduler, Scheduler]:
    conf = Conf(beat_schedule={"e": {"task": "t", "schedule": 60}}, beat_claim_timeout=timeout,
                beat_lease_seconds=LEASE)
    a = Scheduler(FakeApp(conf, "a", clock, log), store, clock=clock, node_id="a")
    b = Scheduler(FakeApp(conf, "b", b_clock or clock, log), store, clock=b_clock or clock,
                  node_id="b")
    a.setup()
    return a, b


def slow_publish(a: Scheduler, b: Scheduler, clock: ManualClock, seconds: float, *,
                 a_alive: bool = True, b_clock: ManualClock | None = None) -> None:
    """Make a's next publish take ``seconds`` while b keeps ticking (and a's keeper runs)."""

    def during() -> None:
        a.app.during_send = None
        for _ in range(int(seconds / 0.5)):
            clock.advance(0.5)
            if b_clock is not None:
                b_clock.advance(0.5)
            if a_alive:
                a.claims.renew(clock.now())
            b.tick()

    a.app.during_send = during


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
def test_a_slow_publish_is_never_resent_by_another_scheduler(store_kind: str,
                                                             tmp_path: Any) -> None:
    store: ScheduleStore = (MemoryStore() if store_kind == "memory"
                            else SQLiteStore(f"sqlite:///{tmp_path / 'b.db'}"))
    clock, log = ManualClock(START), []
    a, b = two(store, clock, log)
    slow_publish(a, b, clock, seconds=100)  # > 3 claim timeouts, b leads meanwhile
    clock.advance(60)
    a.tick()
    for _ in range(20):
        clock.advance(5)
        b.tick()
    assert senders(log) == ["a"]
    assert max(Counter(s.task_id for s in log).values()) == 1
    assert {f.state for f in store.list_fires("e")} == {"sent"}
    store.close()


def test_a_paused_claimer_is_taken_over_once_watched_for_the_timeout(caplog: Any) -> None:
    """No renewals (the claimer is paused or dead): the claim is re-sent, same id, named."""
    caplog.set_level(logging.WARNING, logger="celeriac.beat")
    store, clock, log = MemoryStore(), ManualClock(START), []
    a, b = two(store, clock, log)
    slow_publish(a, b, clock, seconds=45, a_alive=False)
    clock.advance(60)
    a.tick()
    assert senders(log) == ["b", "a"], "b re-sent it, then the paused a woke up"
    assert any("re-sending 'e' fire" in r.getMessage() and FIRE_60 in r.getMessage()
               for r in caplog.records)


def test_a_claimer_whose_clock_is_behind_is_not_declared_dead() -> None:
    store, clock, log = MemoryStore(), ManualClock(START), []
    ahead = ManualClock(START + timedelta(minutes=5))
    a, b = two(store, clock, log, b_clock=ahead)
    slow_publish(a, b, clock, seconds=100, b_clock=ahead)
    clock.advance(60)
    ahead.advance(60)
    a.tick()
    assert senders(log) == ["a"]
    assert max(Counter(s.task_id for s in log).values()) == 1


class FailingMarks(MemoryStore):
    """mark_sent fails (a store hiccup) the first ``failures`` times."""

    failures = 0

    def mark_sent(self, entry: str, fire_time: datetime, sent_at: datetime) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("store unreachable")
        super().mark_sent(entry, fire_time, sent_at)


def test_a_failed_mark_is_retried_never_the_publish() -> None:
    store, clock, log = FailingMarks(), ManualClock(START), []
    a, b = two(store, clock, log, timeout=10)
    store.failures = 30  # the three tries of the publish tick, then the next tick's tries
    clock.advance(60)
    a.tick()
    assert [f.state for f in store.list_fires("e")] == ["claimed"]
    for _ in range(200):  # 100 s: a's keeper renews, b watches, a retries the mark
        clock.advance(0.5)
        a.claims.renew(clock.now())
        for sched in (a, b):
            sched.tick()
    assert {f.state for f in store.list_fires("e")} == {"sent"}
    assert senders(log) == ["a"]
    assert max(Counter(s.task_id for s in log).values()) == 1


def test_the_watch_starts_again_after_a_gap() -> None:
    """A scheduler that did not look for over half the timeout cannot call a claim abandoned."""
    store, clock, log = MemoryStore(), ManualClock(START), []
    a, b = two(store, clock, log, timeout=30)
    a.app.during_send = lambda: (_ for _ in ()).throw(SystemExit)  # a dies mid-publish
    clock.advance(60)
    with pytest.raises(SystemExit):
        a.tick()
    b.tick()                      # sees the claim
    clock.advance(31)             # looks again only after more than half the timeout
    b.tick()
    assert senders(log) == []
    for _ in range(6):
        clock.advance(5)
        b.tick()
    assert senders(log) == ["b"]
