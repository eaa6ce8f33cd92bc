"""The ``celeriac`` command line (click): one module per command group, see :mod:`.main`."""

from __future__ import annotations

from .main import cli, main

__all__ = ["cli", "main"]
