"""The reliability suite's counting and report rules (bench/reliability/counting.py, report.py).

Fast and process-free: ledgers are written by hand, so each rule (what is lost,
which duplicate is explained by which fault, time to recover, the fuzz
outcome, the markdown section replaced in place) is checked on its own.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "reliability"
sys.path.insert(0, str(BENCH))
try:
    import counting
    import fuzz
    import report
finally:
    sys.path.remove(str(BENCH))

Fault = counting.Fault


@dataclass(frozen=True)
class Row:
    key: str
    event: str
    pid: int
    at: float


def ran(key: str, pid: int, start: float, end: float | None) -> list[Row]:
    rows = [Row(key, "start", pid, start)]
    if end is not None:
        rows.append(Row(key, "done", pid, end))
    return rows


def test_lost_is_accepted_never_finished_and_not_dead_lettered() -> None:
    runs = ran("a", 1, 1.0, 2.0) + ran("b", 1, 1.0, None)
    figures = counting.count("s", "redis", "celeriac", ["a", "b", "c", "d"], runs, ["d"])
    assert (figures.accepted, figures.lost, figures.dead_lettered) == (4, 2, 1)
    assert not figures.ok
    # a call that ran but was never accepted (publish raised) is not counted at all
    figures = counting.count("s", "redis", "celeriac", ["a"], runs + ran("z", 1, 1, 2), [])
    assert (figures.accepted, figures.lost, figures.duplicated) == (1, 0, 0)
    assert figures.ok


def test_duplicates_are_explained_by_the_fault_that_hit_them() -> None:
    kill = Fault("kill", 10.0, 10.0, frozenset({7}))
    outage = Fault("outage", 20.0, 25.0)
    runs = (ran("killed", 7, 9.0, 9.5) + ran("killed", 8, 11.0, 12.0)      # ran, then killed
            + ran("down", 8, 21.0, 22.0) + ran("down", 8, 26.0, 27.0)      # outcome unstored
            + ran("plain", 8, 1.0, 2.0) + ran("plain", 8, 3.0, 4.0)        # no excuse
            + ran("late", 7, 11.0, 12.0) + ran("late", 8, 13.0, 14.0))     # pid 7 after kill
    figures = counting.count("s", "redis", "celeriac", ["killed", "down", "plain", "late"],
                             runs, [], [kill, outage])
    assert figures.duplicated == 4
    assert figures.explained == {"kill": 1, "outage": 1, "unexplained": 2}
    assert figures.unexplained == 2
    assert not figures.ok


def test_a_paused_workers_late_finish_is_explained_by_the_stop() -> None:
    stop = Fault("stop", 10.0, 20.0, frozenset({7}))
    runs = ran("x", 7, 9.0, None) + ran("x", 8, 15.0, 16.0) + [Row("x", "done", 7, 21.0)]
    figures = counting.count("s", "redis", "celeriac", ["x"], runs, [], [stop])
    assert figures.explained == {"stop": 1}
    assert figures.ok
    # recovery of a pause runs from the SIGSTOP: the held call finished 6 s later elsewhere
    assert figures.recover_s == 6.0


def test_time_to_recover_waits_for_the_calls_held_at_the_fault() -> None:
    kill = Fault("kill", 10.0, 10.0, frozenset({7}))
    runs = (ran("held", 7, 9.0, None) + ran("other", 8, 10.5, 11.0)
            + ran("held", 8, 40.0, 41.5))
    assert counting.time_to_recover(runs, [kill]) == 31.5
    assert counting.time_to_recover(ran("a", 1, 1.0, 2.0), [kill]) is None
    worst = counting.time_to_recover(runs, [kill, Fault("kill", 0.5, 0.5)])
    assert worst == 31.5


def test_resumed_after_counts_only_calls_sent_after_the_broker_returned() -> None:
    runs = ran("old", 1, 30.0, 31.0) + ran("new", 1, 32.5, 33.0)
    assert counting.resumed_after(runs, ["new"], 30.0) == 2.5
    assert counting.resumed_after(runs, ["missing"], 30.0) is None


def test_fuzz_outcomes() -> None:
    sent = {f"bad-{i}": f"field{i % 3}" for i in range(6)}
    out = counting.count_fuzz(sent, {"bad-0": 1, "bad-1": 3, "bad-2": 1, "bad-99": 1},
                              ran=["bad-2", "bad-3"], queued=1)
    assert (out.sent, out.fields) == (6, 3)
    # bad-2 ran although it was dead-lettered later: counted as ran
    assert (out.dead_first, out.dead_later, out.ran) == (1, 1, 2)
    assert (out.left_in_queue, out.vanished, out.unmatched_dead) == (1, 1, 1)
    assert out.misses == {"field0": "ran", "field1": "dead-lettered later", "field2": "ran"}
    assert "not dead-lettered at once: field0 (ran)" in out.line()
    celery = counting.count_fuzz(sent, None, ran=[], queued=0)
    assert celery.vanished == 6
    assert celery.misses == {}  # no dead-letter store: nothing to single out


def test_every_malformed_message_carries_its_marker_and_breaks_one_field() -> None:
    messages = fuzz.interleaved(400, 400, "redis")
    assert len(messages) == 800
    bad = [m for m in messages if m.marker.startswith("bad-")]
    assert {m.field for m in bad} >= {"headers.id", "headers.timelimit", "properties.priority",
                                      "embed.callbacks", "content-type", "envelope"}
    for message in messages:
        assert fuzz.find_marker(message.envelope()) == message.marker
    assert all(m.field == "" for m in messages if m.marker.startswith("valid-"))
    # RabbitMQ's frames cannot carry a property of the wrong type or a non-JSON envelope
    assert {c.field for c in fuzz.cases_for("amqp")} < {c.field for c in fuzz.CASES}


def _figures(scenario: str, **kw: object) -> counting.Figures:
    figures = counting.Figures(scenario, "redis", "celeriac", accepted=10)
    for name, value in kw.items():
        setattr(figures, name, value)
    return figures


def test_table_and_markdown_show_every_figure() -> None:
    results = [_figures("kill", duplicated=2, explained={"kill": 2}, recover_s=1.25,
                        notes=["3 | killed"]),
               _figures("fuzz", lost=1, ok=False, dead_lettered=None)]
    text = report.table(results)
    assert "2 (2 kill)" in text and "1.2" in text and "NO" in text and "    3 | killed" in text
    when = datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc)
    section = report.markdown("redis", results, "python bench/reliability/run.py", {"x": "1"},
                              when=when, sha="abc1234")
    assert "2026-01-02 03:04 UTC" in section and "`abc1234`" in section
    assert "| kill | celeriac | 10 | 0 | 2 (2 kill) | 0 | 1.2 | yes | 3 \\| killed |" in section
    assert "| fuzz | celeriac | 10 | 1 | 0 | - | - | NO |" in section


def test_write_section_replaces_only_its_broker(tmp_path: Path) -> None:
    path = tmp_path / "reliability.md"
    path.write_text("# Reliability\n\nIntro.\n")
    report.write_section(path, "redis", "redis one\n")
    report.write_section(path, "amqp", "amqp one\n")
    report.write_section(path, "redis", "redis two\n")
    text = path.read_text()
    assert text.startswith("# Reliability\n\nIntro.\n")
    assert "redis two" in text and "redis one" not in text and "amqp one" in text
    assert text.index("redis two") < text.index("amqp one")


@pytest.mark.parametrize("samples,expected", [
    ([(500, 80_000), (1000, 81_920), (50_000, 92_160)], "RSS 80 MiB after 1,000 -> 90 MiB"),
    ([], "RSS not measured"),
])
def test_rss_note(samples: list[tuple[int, int]], expected: str) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import scenarios
    finally:
        sys.path.remove(str(BENCH))
    assert scenarios.rss_note(samples).startswith(expected)
