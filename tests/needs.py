"""``need(module)``: ``pytest.importorskip`` that fails instead of skipping under CI=true.

A test that needs an optional test dependency (real Celery, kombu, a driver) skips
when it is missing on a developer's machine, like the service checks in
``conftest.py``; in CI the dependency is part of the test environment, so a
missing one is a failure, never a silent skip. ``tests/conftest.py`` puts this
directory on ``sys.path``, so every tier imports it as ``from needs import need``.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def need(module: str, reason: str | None = None) -> ModuleType:
    """Import ``module``; skip when it is missing, fail when it is missing under CI=true."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = reason or f"{module} is not installed ({exc})"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: test dependencies are required)", pytrace=False)
        pytest.skip(message, allow_module_level=True)
        raise  # pragma: no cover - pytest.skip raises
