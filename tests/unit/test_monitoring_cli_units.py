"""Pieces of the monitoring CLI that need no worker: multi's node names and options,
the live events view's rendering, durations of queue targets."""

from __future__ import annotations

import socket
import time
from datetime import timedelta
from typing import Any

import pytest

from celeriac.cli.multi import parse
from celeriac.config.targets import describe, duration, queue_targets
from celeriac.events import State
from celeriac.exceptions import ImproperlyConfigured

HOST = socket.gethostname()


def test_multi_names_and_per_node_options() -> None:
    nodes = parse(["w1", "w2@example.com", "--app=proj", "-l", "INFO", "-c:w1", "4",
                   "-Q:2", "high", "--pidfile=/run/%n.pid", "--logfile=/log/%n%I.log"])
    assert [n.name for n in nodes] == [f"w1@{HOST}", "w2@example.com"]
    w1, w2 = nodes
    assert w1.pidfile == "/run/w1.pid" and w2.logfile == "/log/w2.log"
    argv1, argv2 = w1.argv(), w2.argv()
    assert argv1[argv1.index("--app") + 1] == "proj"
    assert argv1.index("--app") < argv1.index("worker")  # a global option goes first
    assert argv1[argv1.index("-c") + 1] == "4" and "-c" not in argv2
    assert argv2[argv2.index("-Q") + 1] == "high" and "-Q" not in argv1
    assert "--detach" in argv1 and f"--pidfile={w1.pidfile}" in argv1
    assert [n.name for n in parse(["3"])] == [f"celery{i}@{HOST}" for i in (1, 2, 3)]
    assert parse(["w1"], app="proj")[0].argv()[3:5] == ["--app", "proj"]
    assert parse(["w1", "--logfile=%h.log"])[0].logfile.endswith(f"w1@{HOST}.log")


def test_multi_node_options_replace_the_general_ones() -> None:
    """Celery's "Next steps" example: three nodes on images,video, two on data, the rest
    on default; a node's own option wins over the general one whatever their order."""
    nodes = parse(["10", "-A", "proj", "-l", "INFO", "-Q:1-3", "images,video",
                   "-Q:4,5", "data", "-Q", "default", "--concurrency", "2", "-c:celery2", "4"])

    def value(node: Any, *keys: str) -> list[str]:
        argv = node.argv()
        return [argv[i + 1] for i, arg in enumerate(argv) if arg in keys]

    assert [value(n, "-Q") for n in nodes] == [["images,video"]] * 3 + [["data"]] * 2 + [
        ["default"]] * 5
    assert value(nodes[1], "-c", "--concurrency") == ["4"]
    assert value(nodes[0], "-c", "--concurrency") == ["2"]


def test_multi_short_options_take_their_value_as_in_celery() -> None:
    """Celery's multi help example `-L:4,5 DEBUG`: a short option that is not a known
    flag takes the next argument as its value; the value is no node name."""
    nodes = parse(["2", "-L:4,5", "debug"])
    assert [n.name for n in nodes] == [f"celery1@{HOST}", f"celery2@{HOST}"]
    assert all("-L" not in n.argv() and "debug" not in n.argv() for n in nodes)
    five = parse(["5", "-L:4,5", "DEBUG", "-E", "-B"])
    assert [n.argv()[n.argv().index("-L") + 1] for n in five[3:]] == ["DEBUG", "DEBUG"]
    assert all("-L" not in n.argv() and "-E" in n.argv() for n in five[:3])
    flags = parse(["w1", "-E", "w2"])  # -E is a flag: w2 is a node
    assert [n.short for n in flags] == ["w1", "w2"]


def test_multi_arguments_after_double_dash_go_to_every_worker() -> None:
    nodes = parse(["2", "-c", "1", "--", "worker_prefetch_multiplier=1"])
    assert len(nodes) == 2
    assert all(n.argv()[-2:] == ["--", "worker_prefetch_multiplier=1"] for n in nodes)


def test_queue_target_durations() -> None:
    assert duration("30s") == 30 and duration("15m") == 900 and duration("1h") == 3600
    assert duration(90) == 90 and duration(timedelta(minutes=2)) == 120
    assert duration("250ms") == 0.25
    assert describe(900) == "15m" and describe(90) == "90s" and describe(3600) == "1h"
    assert queue_targets({"email": "30s"}) == {"email": 30.0}
    with pytest.raises(ImproperlyConfigured, match=r"task_queue_targets\['email'\]"):
        queue_targets({"email": "soon"})
    with pytest.raises(ImproperlyConfigured, match="task_queue_targets"):
        queue_targets(["email"])
    with pytest.raises(ImproperlyConfigured, match="more than zero"):
        queue_targets({"email": 0})


def test_live_view_renders_workers_and_tasks() -> None:
    console_module = pytest.importorskip("rich.console")
    from celeriac.cli.events_view import render

    state = State()
    now = time.time()
    state.event({"type": "worker-heartbeat", "hostname": "w1@h", "timestamp": now,
                 "local_received": now, "freq": 2.0, "active": 1, "processed": 7,
                 "loadavg": [0.5, 0.4, 0.3]})
    state.event({"type": "task-received", "hostname": "w1@h", "uuid": "u1",
                 "name": "proj.add", "args": "(1, 2)", "kwargs": "{}", "timestamp": now})
    state.event({"type": "task-succeeded", "hostname": "w1@h", "uuid": "u1",
                 "result": "3", "runtime": 0.25, "timestamp": now + 1})
    state.event({"type": "task-failed", "hostname": "w1@h", "uuid": "u2",
                 "exception": "ValueError('boom')", "timestamp": now + 2})
    console = console_module.Console(width=200, record=True)
    console.print(render(state))
    text = console.export_text()
    assert "w1@h" in text and "ONLINE" in text and "7" in text
    assert "proj.add" in text and "SUCCESS" in text and "0.250s" in text
    assert "FAILURE" in text and "ValueError('boom')" in text
