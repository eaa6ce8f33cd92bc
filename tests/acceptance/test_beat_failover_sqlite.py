"""Real processes on SQLite: three ``celeriac beat`` (or ``worker -B``), the leader SIGKILLed.

Every fire time of an every-second entry from the first fire to the last is
enqueued exactly once or named in a "missed fires not sent" warning, and the
longest silence is about one period plus the takeover grace, far below the
10 s lease (it used to be the lease: ten silent seconds, no warning). The
scenario is ``bench/reliability/beat_failover.py``.
"""

from __future__ import annotations

import sys

import pytest
from beatfailover import run_and_check

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@pytest.mark.parametrize("mode", ["beat", "worker"])
def test_leader_killed_on_sqlite(mode: str) -> None:
    run_and_check("sqlite", mode)


def test_leader_killed_with_missed_all_sends_every_fire() -> None:
    result = run_and_check("sqlite", "beat", missed="all")
    assert result["skipped_with_warning"] == 0
