"""Acceptance tier: make the ``workerproc`` helper importable from the test modules.

pytest runs with ``--import-mode=importlib``, which does not put test
directories on ``sys.path``; this conftest (loaded before the modules beside
it) adds this directory so ``from workerproc import ...`` works.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
