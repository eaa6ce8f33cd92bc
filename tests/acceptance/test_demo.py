"""Acceptance: ``examples/demo/run_demo.py`` (the README's first command) runs and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo" / "run_demo.py"


def test_demo_runs_a_worker_and_prints_results(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CELERIAC_SQLITE_PATH", "CELERIAC_BROKER_URL", "CELERY_BROKER_URL")}
    done = subprocess.run([sys.executable, str(DEMO)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for line in ("worker ready", "add(2, 2) = 4", "build_report progress: 1/4",
                 "build_report -> 'report with 4 sections'",
                 "flaky -> 'payment-api answered after 1 retry'",
                 "remind ran", "worker exited with code 0",
                 "demo finished: all results as expected"):
        assert line in out, f"{line!r} missing from:\n{out}"
    assert list(tmp_path.iterdir()) == [], "the demo must not write to the current directory"
