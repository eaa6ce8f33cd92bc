"""Real processes on PostgreSQL: three ``celeriac beat`` (or ``worker -B``), the leader SIGKILLed.

The same checks as on SQLite and Redis (``beatfailover.run_and_check``); the
scenario runs in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import sys

import pytest
from beatfailover import run_and_check

pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")]


@pytest.mark.parametrize("mode", ["beat", "worker"])
def test_leader_killed_on_postgres(postgres_url: str, mode: str) -> None:
    run_and_check(postgres_url.split("?", 1)[0], mode)
