"""Task results, at Celery's import path (``from celeriac.result import AsyncResult``).

The code lives in :mod:`celeriac.results`; this module keeps the path
Celery users write (``celery.result``).
"""

from __future__ import annotations

from .results.async_result import AsyncResult, EagerResult, ResultBase
from .results.blocking import allow_join_result, assert_will_not_block, denied_join_result
from .results.group import GroupResult, ResultSet, result_from_tuple

__all__ = ["AsyncResult", "EagerResult", "GroupResult", "ResultBase", "ResultSet",
           "allow_join_result", "assert_will_not_block", "denied_join_result",
           "result_from_tuple"]
