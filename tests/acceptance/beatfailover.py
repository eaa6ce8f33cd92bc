"""Acceptance-test helper: run ``bench/reliability/beat_failover.py`` and check its figures.

The reliability scenario itself lives in the bench (one implementation for the
published figures and for the tests); this module loads it by path and holds
the checks every failover test makes.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from celeriac.schedules.policy import TAKEOVER_GRACE

SCENARIO = Path(__file__).resolve().parents[2] / "bench" / "reliability" / "beat_failover.py"
#: Scheduling slack on a loaded 2-core machine: process wake-ups, SQLite fsyncs.
SLACK = 3.0


def scenario() -> ModuleType:
    name = "_beat_failover_scenario"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCENARIO)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def run_and_check(broker_url: str, mode: str, **options: Any) -> dict[str, Any]:
    """Three schedulers, the leader SIGKILLed; every fire accounted for, the gap short."""
    result: dict[str, Any] = scenario().run(broker_url, mode=mode, schedulers=3,
                                            **{"kills": 1, **options})
    fires = result["fires"]
    assert result["expected"] >= 10, result
    assert fires["lost"] == [], f"fires lost without a warning: {fires['lost']}"
    assert fires["duplicated"] == [], f"fires sent twice: {fires['duplicated']}"
    # A second copy is possible only if the kill fell between the broker accepting a message
    # and the store recording it; the re-sending scheduler names it, and it keeps its task id.
    assert result["duplicated_at_kill"] <= result["kills"], result
    assert result["stuck_claims"] == [] and result["unexpected"] == [], result
    assert (result["sent"] + result["skipped_with_warning"] + result["duplicated_at_kill"]
            == result["expected"])
    assert result["takeover_warnings"] >= result["kills"], "the takeover is logged"
    bound = result["every"] + TAKEOVER_GRACE + SLACK
    assert result["max_gap"] <= bound < result["lease"], result
    assert all(t <= bound for t in result["takeover"]), result
    return result
