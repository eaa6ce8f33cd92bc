"""``inspect memsample``/``memdump``/``objgraph`` and the refused ``election``, against
real worker processes through the CLI and ``app.control.inspect()``.

Celery's reply shapes (``celery/worker/control.py``): ``memsample`` is a human RSS
string, ``memdump`` a text report, ``objgraph`` ``{"filename": path}`` or, without
the objgraph package, ``{"error": "ImportError('Requires the objgraph library')"}``.
The process measured is the one answering remote control: the worker process, or the
supervisor under prefork (not the children running the tasks).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from workerproc import project

SOURCE = """
    from celeriac import Celery

    app = Celery("proj")
    held = []

    class Leaky:
        pass

    @app.task
    def hold(megabytes):
        held.append(b"\\x01" * (megabytes * 1024 * 1024))
        return len(held)

    @app.task
    def leak(n):
        held.extend(Leaky() for _ in range(n))
        return n
"""

HUMAN = re.compile(r"^(\d+(?:\.\d+)?)(b|KB|MB|GB|TB)$")
FACTOR = {"b": 1, "KB": 2 ** 10, "MB": 2 ** 20, "GB": 2 ** 30, "TB": 2 ** 40}


def to_bytes(human: str) -> float:
    match = HUMAN.match(human)
    assert match, f"not Celery's humanbytes format: {human!r}"
    return float(match.group(1)) * FACTOR[match.group(2)]


def one(replies: dict[str, object] | None) -> object:
    assert replies and len(replies) == 1, replies
    return next(iter(replies.values()))


@pytest.mark.parametrize("pool", ["solo", "threads", "asyncio", "prefork"])
def test_memsample_and_memdump_on_every_pool(tmp_path: Path, pool: str) -> None:
    with project(tmp_path, SOURCE) as proj, proj.worker("-n", f"mem-{pool}@%h", pool=pool,
                                                         concurrency=1):
        inspect = proj.app.control.inspect(timeout=5, limit=1)
        first = one(inspect.memsample())
        assert isinstance(first, str) and to_bytes(first) > 1024 * 1024
        cli = proj.cli("inspect", "memsample", "--json", "-t", "3")
        assert cli.returncode == 0, cli.stderr
        second = one(json.loads(cli.stdout))
        assert isinstance(second, str) and HUMAN.match(second)
        one(inspect.memsample())
        dump = proj.cli("inspect", "memdump", "2", "-t", "3")
        assert dump.returncode == 0, dump.stderr
        assert "OK" in dump.stdout and "- rss (sample):" in dump.stdout
        assert len(re.findall(r"-    > \S+,", dump.stdout)) == 2  # 3 samples, 2 shown
        assert re.search(r"- rss \(end\): \d+(\.\d+)?(b|KB|MB|GB)\.", dump.stdout)
        assert first in dump.stdout  # the first sample is always among those shown
        again = one(inspect.memdump())  # the samples were forgotten
        assert isinstance(again, str) and "(sample)" not in again
        assert again.startswith("- rss (end): ")


@pytest.mark.parametrize("pool,grows", [("threads", True), ("prefork", False)])
def test_memsample_measures_the_process_answering(tmp_path: Path, pool: str,
                                                  grows: bool) -> None:
    """Under threads the worker process holds what its tasks keep; under prefork the
    supervisor answers, and what a child keeps does not show."""
    with project(tmp_path, SOURCE) as proj, proj.worker("-n", f"rss-{pool}@%h", pool=pool,
                                                         concurrency=1):
        inspect = proj.app.control.inspect(timeout=5, limit=1)
        before = to_bytes(str(one(inspect.memsample())))
        assert proj.client().hold.delay(200).get(timeout=60) == 1
        after = to_bytes(str(one(inspect.memsample())))
        if grows:
            assert after - before > 150 * 2 ** 20, (before, after)
        else:
            assert after - before < 100 * 2 ** 20, (before, after)


def test_objgraph_draws_the_objects_of_a_type(tmp_path: Path) -> None:
    with project(tmp_path, SOURCE) as proj, proj.worker("-n", "graph@%h", concurrency=1):
        assert proj.client().leak.delay(3).get(timeout=30) == 3
        inspect = proj.app.control.inspect(timeout=60, limit=1)
        node = str(next(iter(inspect.ping())))
        reply = one(inspect.objgraph("Leaky", n=2, max_depth=3))
        assert isinstance(reply, dict) and set(reply) == {"filename"}, reply
        drawn = Path(reply["filename"])
        try:
            content = drawn.read_bytes()
            if drawn.suffix == ".png":  # Graphviz's dot is installed
                assert content.startswith(b"\x89PNG")
            else:
                assert drawn.suffix == ".dot" and content.startswith(b"digraph")
                assert b"Leaky" in content
        finally:
            drawn.unlink()
        cli = proj.cli("inspect", "objgraph", "Leaky", "1", "2", "--json", "-t", "30",
                       "-d", node)
        assert cli.returncode == 0, cli.stderr
        path = Path(one(json.loads(cli.stdout))["filename"])  # type: ignore[index]
        assert path.exists()
        path.unlink()
        bad = proj.cli("inspect", "objgraph", "Leaky", "many", "-t", "1")
        assert bad.returncode == 2 and "num must be int" in bad.stderr


def test_objgraph_without_the_package_replies_celerys_error(tmp_path: Path) -> None:
    # a module of that name ahead of the installed one on the worker's path
    (tmp_path / "objgraph.py").write_text("raise ImportError('no objgraph here')\n")
    with project(tmp_path, SOURCE) as proj, proj.worker("-n", "nograph@%h"):
        reply = one(proj.app.control.inspect(timeout=10, limit=1).objgraph())
        assert reply == {"error": "ImportError('Requires the objgraph library')"}
        cli = proj.cli("inspect", "objgraph", "-t", "3")
        assert cli.returncode == 0 and "ERROR" in cli.stdout
        assert "Requires the objgraph library" in cli.stdout


def test_election_is_refused_saying_why(tmp_path: Path) -> None:
    with project(tmp_path, SOURCE) as proj, proj.worker("-n", "elect@%h") as worker:
        replies = proj.app.control.broadcast(
            "election", arguments={"id": "e1", "topic": "task", "action": None},
            reply=True, timeout=5, limit=1)
        assert replies and len(replies) == 1
        payload = one(replies[0])
        assert isinstance(payload, dict) and "gossip" in payload["error"]
        cli = proj.cli("control", "election", "-t", "3")
        assert "ERROR" in cli.stdout and "election is not supported" in cli.stdout
        worker.wait_for_log("Refused control command election (id=e1, topic=task)")
        with pytest.raises(NotImplementedError, match="worker-elect"):
            proj.app.control.election("e2", "task")
