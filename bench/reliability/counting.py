"""Counting a reliability scenario from its ledger: lost, duplicated, dead-lettered, recovery.

Pure functions over plain data (no processes, no broker), so the rules are
unit-tested (``tests/unit/test_reliability_counting.py``):

* **lost**: a call the producer saw accepted (``enqueued``) that never finished
  (no ``done`` row in the ledger) and is not in the dead-letter store;
* **duplicated**: a call whose body finished more than once. Each duplicate is
  *explained* when one of its finishes could not be settled: it ran in a
  process killed afterwards (``kill``: the body ran, the acknowledgement never
  reached the broker) or paused past its lease (``stop``: a second worker took
  it over, the woken one finished its copy and was fenced), or it fell inside
  a broker outage (``outage``: the outcome could not be stored); anything else
  is ``unexplained`` (a bug);
* **dead-lettered**: accepted calls found in the dead-letter store;
* **time to recover**: per fault, from its end (the broker answers again, the
  kill; for a pause, from the SIGSTOP: how long the paused worker's calls wait
  for another worker) until both the first finish after it and the finish of
  every call that was running when the fault began; the worst fault is reported.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class RunRow(Protocol):
    """A ledger row (``projects.Run``): read-only fields."""

    @property
    def key(self) -> str: ...
    @property
    def event(self) -> str: ...
    @property
    def pid(self) -> int: ...
    @property
    def at(self) -> float: ...


@dataclass(frozen=True)
class Fault:
    """One injected fault: ``start``/``end`` epoch seconds; ``pids`` the processes it hit."""

    kind: str
    start: float
    end: float
    pids: frozenset[int] = frozenset()


@dataclass
class Figures:
    """What the suite prints and publishes for one scenario on one broker and system."""

    scenario: str
    broker: str
    system: str
    accepted: int = 0
    lost: int = 0
    duplicated: int = 0
    explained: dict[str, int] = field(default_factory=dict)
    dead_lettered: int | None = 0
    recover_s: float | None = None
    notes: list[str] = field(default_factory=list)
    ok: bool = True
    seconds: float = 0.0
    #: the malformed messages' outcome (the fuzz scenario only)
    fuzz: FuzzCount | None = None

    @property
    def unexplained(self) -> int:
        return self.explained.get("unexplained", 0)

    def as_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "broker": self.broker, "system": self.system,
                "accepted": self.accepted, "lost": self.lost, "duplicated": self.duplicated,
                "explained": dict(self.explained), "dead_lettered": self.dead_lettered,
                "recover_s": self.recover_s, "notes": list(self.notes), "ok": self.ok,
                "seconds": self.seconds,
                "fuzz": None if self.fuzz is None else vars(self.fuzz)}


def finishes(runs: Iterable[RunRow]) -> dict[str, list[RunRow]]:
    """``done`` rows per key, in time order."""
    out: dict[str, list[RunRow]] = defaultdict(list)
    for run in sorted(runs, key=lambda r: r.at):
        if run.event == "done":
            out[run.key].append(run)
    return out


def explain(rows: Sequence[RunRow], faults: Sequence[Fault]) -> str:
    """Why a call finished more than once, from all its finishes (module docstring).

    ``kill``/``stop``: one finish ran in a process the fault hit (killed before
    its acknowledgement reached the broker, or paused past its lease and fenced
    when it woke); ``outage``: one finish fell inside a broker outage, when its
    outcome could not be stored; else ``unexplained``.
    """
    for run in rows:
        for fault in faults:
            if run.pid in fault.pids and (fault.kind == "stop" or run.at <= fault.end):
                return fault.kind
            if fault.kind == "outage" and fault.start <= run.at <= fault.end:
                return "outage"
    return "unexplained"


def time_to_recover(runs: Sequence[RunRow], faults: Sequence[Fault]) -> float | None:
    """The worst fault's recovery time (module docstring); None when nothing ran after."""
    worst: float | None = None
    ordered = sorted(runs, key=lambda r: r.at)
    for fault in faults:
        started: set[str] = set()
        finished: set[str] = set()
        for run in ordered:
            if run.at >= fault.start:
                break
            (started if run.event == "start" else finished).add(run.key)
        held = started - finished
        base = fault.start if fault.kind == "stop" else fault.end
        after = [r.at for r in ordered if r.event == "done" and r.at >= base]
        if not after:
            continue
        ends = [after[0]]
        for key in held:
            done = [r.at for r in ordered if r.key == key and r.event == "done"
                    and r.at >= fault.start]
            if done:
                ends.append(done[0])
        recover = max(ends) - base
        worst = recover if worst is None else max(worst, recover)
    return None if worst is None else round(max(worst, 0.0), 1)


def resumed_after(runs: Iterable[RunRow], keys: Iterable[str], at: float) -> float | None:
    """Seconds from ``at`` to the first start of any of ``keys`` (calls sent after ``at``);
    None when none of them started."""
    wanted = set(keys)
    starts = [r.at for r in runs if r.event == "start" and r.key in wanted and r.at >= at]
    return round(min(starts) - at, 1) if starts else None


def count(scenario: str, broker: str, system: str, accepted: Iterable[str],
          runs: Sequence[RunRow], dead: Iterable[str] | None, faults: Sequence[Fault] = (),
          ) -> Figures:
    """The figures of one scenario. ``dead`` is None when the system has no dead-letter store."""
    keys = set(accepted)
    done = finishes(runs)
    dead_keys = set(dead) if dead is not None else set()
    explained: Counter[str] = Counter()
    duplicated = 0
    for key, rows in done.items():
        if key in keys and len(rows) > 1:
            duplicated += 1
            explained[explain(rows, faults)] += 1
    lost = sum(1 for key in keys if key not in done and key not in dead_keys)
    figures = Figures(scenario, broker, system, accepted=len(keys), lost=lost,
                      duplicated=duplicated, explained=dict(explained),
                      dead_lettered=len(keys & dead_keys) if dead is not None else None,
                      recover_s=time_to_recover(runs, faults) if faults else None)
    figures.ok = lost == 0 and explained["unexplained"] == 0
    return figures


@dataclass
class FuzzCount:
    """Outcome of the malformed messages of the fuzz scenario."""

    sent: int = 0
    dead_first: int = 0
    dead_later: int = 0
    ran: int = 0
    vanished: int = 0
    left_in_queue: int = 0
    fields: int = 0
    unmatched_dead: int = 0
    #: field -> outcome for each field whose message was not dead-lettered at once
    #: (kept only for a system with a dead-letter store)
    misses: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        text = (f"malformed {self.sent} ({self.fields} fields): dead-lettered on first "
                f"delivery {self.dead_first}, later {self.dead_later}, ran {self.ran}, "
                f"vanished {self.vanished}, still queued {self.left_in_queue}")
        if self.misses:
            shown = sorted(self.misses.items())
            text += "; not dead-lettered at once: " + ", ".join(
                f"{name} ({what})" for name, what in shown[:12])
            if len(shown) > 12:
                text += f" and {len(shown) - 12} more fields"
        return text


def count_fuzz(sent: dict[str, str], dead: dict[str, int] | None, ran: Iterable[str],
               queued: int = 0) -> FuzzCount:
    """Sort malformed messages (marker -> field) by outcome.

    ``dead`` maps a marker to the delivery count its dead letter recorded (None:
    the system has no dead-letter store); ``ran`` are markers the ledger saw
    start (a body that ran counts as ``ran`` even if the message was
    dead-lettered afterwards); ``queued`` is how many messages were still in
    the queue after the drain. ``vanished`` = neither dead-lettered, nor run,
    nor still queued: dropped without a trace.
    """
    ran_set = set(ran)
    dead_map = dead or {}
    out = FuzzCount(sent=len(sent), fields=len(set(sent.values())),
                    unmatched_dead=len(set(dead_map) - set(sent)))
    for marker, name in sent.items():
        if marker in ran_set:
            out.ran += 1
            out.misses[name] = "ran"
        elif marker in dead_map:
            if dead_map[marker] <= 1:
                out.dead_first += 1
            else:
                out.dead_later += 1
                out.misses[name] = "dead-lettered later"
        elif dead is not None:  # (without a dead-letter store every miss is expected)
            out.misses.setdefault(name, "vanished or still queued")
    out.left_in_queue = min(queued, out.sent - out.ran - out.dead_first - out.dead_later)
    out.vanished = out.sent - out.ran - out.dead_first - out.dead_later - out.left_in_queue
    return out
