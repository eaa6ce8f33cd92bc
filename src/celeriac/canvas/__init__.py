"""Canvas: signatures and the workflows built from them (Celery's ``celery.canvas``).

``signature`` (a task call as data), ``chain`` (one after the other),
``group`` (in parallel), ``chord`` (a group, then a body with its results),
``chunks``/``xmap``/``xstarmap`` (many calls in few messages). Publishing a
group's members in one batch is :mod:`.publish`; what the worker does after a
task ends (callbacks, next chain step, error callbacks, the chord join) is
:mod:`.callbacks`, :mod:`.errbacks` and :mod:`.join`.
"""

from __future__ import annotations

from .chain import chain
from .group import chord, group
from .maps import chunks, xmap, xstarmap
from .signature import Signature, maybe_signature, signature, subtask

__all__ = ["Signature", "chain", "chord", "chunks", "group", "maybe_signature", "signature",
           "subtask", "xmap", "xstarmap"]
