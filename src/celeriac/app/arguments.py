"""Checking a call's arguments against its task's ``run`` signature (``Task.typing``).

``delay()`` and ``apply_async()`` refuse arguments the task could not be called
with, as Celery does. Whether arguments bind depends only on how many
positional ones there are and the keyword names, so a shape that bound once is
remembered per task class and the check costs a set lookup afterwards.
"""

from __future__ import annotations

import inspect
from typing import Any, cast

_NO_SIGNATURE = object()
_SHAPES_KEPT = 64  # shapes remembered per task class


def check_arguments(task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Raise TypeError (naming the task) when ``task.run`` cannot take these arguments."""
    shape = (len(args), *kwargs) if kwargs else len(args)
    cls = type(task)
    bound: set[Any] | None = cls.__dict__.get("_bound_shapes")
    if bound is not None and shape in bound:
        return
    sig = run_signature(cls, task.run)
    if sig is None:
        return
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{task.name}() {exc}") from None
    if bound is None:
        bound = set()
        cls._bound_shapes = bound
    if len(bound) < _SHAPES_KEPT:
        bound.add(shape)


def run_signature(cls: type, run: Any) -> inspect.Signature | None:
    """``inspect.signature(task.run)``, computed once per task class (hot path of delay)."""
    cached = cls.__dict__.get("_run_signature_cache", _NO_SIGNATURE)
    if cached is not _NO_SIGNATURE:
        return cast("inspect.Signature | None", cached)
    try:
        sig: inspect.Signature | None = inspect.signature(run)
    except (TypeError, ValueError):
        sig = None
    cls._run_signature_cache = sig  # type: ignore[attr-defined]
    return sig
