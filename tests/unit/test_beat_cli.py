"""``celeriac schedule ...`` edits reach running schedulers within one tick, never double-firing."""

from __future__ import annotations

import itertools
import json
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from click.testing import CliRunner

from celeriac.beat.scheduler import Scheduler
from celeriac.cli.beat import beat_command, schedule_group
from celeriac.schedules.clock import ManualClock

UTC = timezone.utc


class Conf(dict):
    __getattr__ = dict.get

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


class RecordingApp:
    def __init__(self, conf: dict[str, Any], clock: ManualClock) -> None:
        self.conf = Conf(conf)
        self.clock = clock
        self.sent: list[dict[str, Any]] = []

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, *, task_id: str,
                  headers: dict[str, Any], **options: Any) -> str:
        self.sent.append({"task": name, "task_id": task_id, "at": self.clock.now(),
                          "args": args, "options": options})
        return task_id


@dataclass
class Obj:
    app: RecordingApp
    clock: ManualClock | None = None


@pytest.fixture
def cluster() -> Any:
    clock = ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    conf = {"beat_schedule_store": f"memory://cli-{uuid.uuid4().hex}",
            "beat_schedule": {"tick": {"task": "tasks.tick", "schedule": 10}}}
    app = RecordingApp(conf, clock)
    scheds = [Scheduler(app, clock=clock, node_id=name) for name in ("a", "b")]
    for sched in scheds:
        sched.setup()
    return clock, app, scheds


def run_for(seconds: float, clock: ManualClock, scheds: list[Scheduler]) -> int:
    """Tick both schedulers every 0.5 s of simulated time; return the number of ticks."""
    ticks = 0
    end = clock.now() + timedelta(seconds=seconds)
    while clock.now() < end:
        for sched in scheds:
            sched.tick()
        ticks += 1
        clock.advance(0.5)
    return ticks


def cli(app: RecordingApp, *args: str) -> Any:
    result = CliRunner().invoke(schedule_group, list(args), obj=Obj(app, app.clock))
    assert result.exit_code == 0, result.output
    return result


def fires_of(app: RecordingApp, task: str) -> list[datetime]:
    return [m["at"] for m in app.sent if m["task"] == task]


def test_runtime_edits_through_the_cli(cluster: Any) -> None:
    clock, app, scheds = cluster
    run_for(60.5, clock, scheds)
    assert len(fires_of(app, "tasks.tick")) == 6

    cli(app, "add", "fast", "tasks.fast", "--every", "1", "--args", "[1]", "-Q", "q")
    sent_before = len(app.sent)
    clock.advance(1.0)
    for sched in scheds:
        sched.tick()  # one tick
    new = app.sent[sent_before:]
    assert [m["task"] for m in new].count("tasks.fast") == 1, "seen within one tick"
    fast = next(m for m in new if m["task"] == "tasks.fast")
    assert fast["args"] == [1] and fast["options"] == {"queue": "q"}

    cli(app, "disable", "tick")
    clock.advance(0.5)
    disabled_at = clock.now()
    run_for(30, clock, scheds)
    assert [t for t in fires_of(app, "tasks.tick") if t > disabled_at] == []

    cli(app, "enable", "tick")
    enabled_at = clock.now()
    run_for(21, clock, scheds)
    resumed = [t for t in fires_of(app, "tasks.tick") if t >= enabled_at]
    assert len(resumed) == 2, "no catch-up of fires missed while disabled"

    cli(app, "add", "tick", "tasks.tick", "--every", "5", "--replace")
    changed_at = clock.now()
    run_for(20.2, clock, scheds)
    after = [t for t in fires_of(app, "tasks.tick") if t >= changed_at]
    assert len(after) == 4

    cli(app, "remove", "fast")
    removed_at = clock.now()
    run_for(5, clock, scheds)
    assert [t for t in fires_of(app, "tasks.fast") if t > removed_at] == []

    ids = Counter(m["task_id"] for m in app.sent)
    assert max(ids.values()) == 1, "never a duplicate fire"
    ticks = fires_of(app, "tasks.tick")
    assert all(b - a >= timedelta(seconds=5) for a, b in itertools.pairwise(ticks))


def test_list_and_run_now(cluster: Any) -> None:
    clock, app, scheds = cluster
    run_for(25, clock, scheds)
    out = cli(app, "list").output
    assert "tasks.tick" in out and "every 10s" in out and "TOTAL_RUN_COUNT" in out
    result = cli(app, "run-now", "tick")
    assert "task id" in result.output and app.sent[-1]["task"] == "tasks.tick"
    [row] = json.loads(cli(app, "list", "--json").output)
    assert row["name"] == "tick" and row["total_run_count"] == 3 and row["enabled"]
    assert row["last_run_at"] != "-" and row["next_run_at"] != "-"
    assert row["source"] == "code"


def test_cli_errors(cluster: Any) -> None:
    _, app, _ = cluster
    runner = CliRunner()
    for args in (["enable", "nope"], ["remove", "nope"], ["run-now", "nope"],
                 ["add", "x", "t"], ["add", "x", "t", "--every", "1", "--cron", "* * * * *"],
                 ["add", "x", "t", "--cron", "61 * * * *"], ["add", "x", "t", "--every", "1",
                                                            "--args", "{}"],
                 ["add", "tick", "t", "--every", "1"]):
        result = runner.invoke(schedule_group, args, obj=Obj(app, app.clock))
        assert result.exit_code != 0, args
    ok = runner.invoke(schedule_group, ["add", "c", "t", "--cron", "*/5 9-17 * * mon-fri",
                                        "--missed", "all", "--max-lateness", "60"],
                       obj=Obj(app, app.clock))
    assert ok.exit_code == 0, ok.output
    assert "cron */5 9-17 * * mon-fri" in ok.output


def test_beat_command_accepts_celery_options() -> None:
    result = CliRunner().invoke(beat_command, ["--help"])
    assert result.exit_code == 0
    for option in ("--loglevel", "--scheduler", "--schedule", "--max-interval", "-S", "-s"):
        assert option in result.output


def test_through_the_real_celeriac_cli(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``celeriac -A proj schedule ...`` with the app loaded from a module, SQLite broker."""
    from celeriac.cli import cli as celeriac_cli

    module = f"schedproj_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "from celeriac import Celery\n"
        f"app = Celery('proj', broker='sqlite:///{tmp_path / 'p.sqlite3'}')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(celeriac_cli, ["-A", module, "schedule", *args])
        assert result.exit_code == 0, result.output
        return result.output

    assert "added report" in run("add", "report", "tasks.report", "--cron", "*/15 9-17 * * *")
    assert "disabled report" in run("disable", "report")
    [row] = json.loads(run("list", "--json"))
    assert (row["name"], row["enabled"], row["schedule"]) == ("report", False,
                                                              "cron */15 9-17 * * *")
    assert "sent report" in run("run-now", "report")
    [row] = json.loads(run("list", "--json"))
    assert row["total_run_count"] == 1
    assert "removed report" in run("remove", "report")
    assert json.loads(run("list", "--json")) == []
