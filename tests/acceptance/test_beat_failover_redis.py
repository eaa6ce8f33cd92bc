"""Real processes on Redis: three ``celeriac beat`` (or ``worker -B``), the leader SIGKILLed.

The same checks as on SQLite (``beatfailover.run_and_check``): no fire lost
without a warning, none sent twice, the silence after the kill about one period
plus the takeover grace. Keys live under a unique prefix and are deleted.
"""

from __future__ import annotations

import sys

import pytest
from beatfailover import run_and_check

pytestmark = [pytest.mark.redis,
              pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")]


@pytest.mark.parametrize("mode", ["beat", "worker"])
def test_leader_killed_on_redis(redis_url: str, mode: str) -> None:
    run_and_check(redis_url, mode)


def test_leader_killed_on_redis_cluster(redis_cluster_url: str) -> None:
    """The same on a local Redis Cluster: the schedule's keys share one hash slot."""
    run_and_check(redis_cluster_url, "beat")
