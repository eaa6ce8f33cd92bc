"""The reliability suite (bench/reliability/run.py) end to end, in its quick form: slow.

Runs a few scenarios on SQLite and, when ``redis-server`` is installed, on a
private Redis the suite starts itself, and checks that celeriac's figures are
``ok`` (0 lost, no unexplained duplicate, every malformed message
dead-lettered on its first delivery). The full suite is run on demand
(``python bench/reliability/run.py``) and its output committed to
docs/reliability.md.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from needs import IN_CI

pytestmark = pytest.mark.slow
RUN = Path(__file__).resolve().parents[2] / "bench" / "reliability" / "run.py"


def suite(tmp_path: Path, *args: str) -> list[dict[str, object]]:
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(RUN), "--quick", "--no-write", "--no-celery",
                           "--json", str(out), *args], capture_output=True, text=True,
                          timeout=900)
    assert out.exists(), proc.stdout + proc.stderr
    return json.loads(out.read_text())  # type: ignore[no-any-return]


@pytest.mark.timeout(900)
def test_quick_suite_on_sqlite(tmp_path: Path) -> None:
    figures = suite(tmp_path, "--broker", "sqlite", "--scenarios", "kill-children,fuzz,gil")
    assert [f["scenario"] for f in figures] == ["kill -9 children", "malformed messages (fuzz)",
                                                "GIL-holding task"]
    for item in figures:
        assert item["ok"], item
    fuzz = figures[1]["fuzz"]
    assert fuzz["dead_first"] == fuzz["sent"] == 1000


@pytest.mark.timeout(900)
def test_quick_broker_outage_on_a_private_redis(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is not installed (CI=true)")
        pytest.skip("redis-server is not installed")
    [figures] = suite(tmp_path, "--broker", "redis", "--scenarios", "outage3")
    assert figures["ok"], figures
    assert figures["lost"] == 0
