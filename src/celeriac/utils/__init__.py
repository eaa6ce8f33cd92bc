"""Helpers users import from Celery's ``celery.utils`` paths.

``celeriac.utils`` itself has the names Celery's ``celery.utils`` keeps for old code
(``uuid``, ``gen_unique_id``, ``chunks``, ``memoize``, ``noop``, ``cached_property``);
``.log``, ``.time`` and ``.functional`` are Celery's modules of the same names.
"""

from __future__ import annotations

import uuid as _uuid
from functools import cached_property

from .functional import chunks, memoize, noop

__all__ = ["cached_property", "chunks", "gen_unique_id", "memoize", "noop", "uuid"]


def uuid() -> str:
    """A new random id (``celery.utils.uuid``)."""
    return str(_uuid.uuid4())


gen_unique_id = uuid
