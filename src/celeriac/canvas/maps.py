"""Celery's one-message map helpers: ``xmap``, ``xstarmap`` and ``chunks``.

``task.map(items)`` and ``task.starmap(items)`` are one message each, run by
the builtin ``celery.map``/``celery.starmap`` tasks (:mod:`celeriac.app.builtins`);
``chunks`` splits the items into parts of ``n``, each part one ``xstarmap``
message of a group.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..results.group import GroupResult
from .group import group
from .signature import Signature, maybe_signature

if TYPE_CHECKING:
    from ..app.base import Celery


def xmap(task: Signature, it: Iterable[Any], app: Celery | None = None) -> Signature:
    """One message running ``task(item)`` for each item (``task.map``)."""
    return Signature("celery.map", (), {"task": dict(task), "it": list(it)}, immutable=True,
                     app=app or task._app)


def xstarmap(task: Signature, it: Iterable[Any], app: Celery | None = None) -> Signature:
    """One message running ``task(*item)`` for each item (``task.starmap``)."""
    return Signature("celery.starmap", (), {"task": dict(task), "it": [list(i) for i in it]},
                     immutable=True, app=app or task._app)


def _split(it: Iterable[Any], n: int) -> Iterator[list[Any]]:
    items = iter(it)
    while True:
        part = list(itertools.islice(items, n))
        if not part:
            return
        yield part


class chunks(Signature):
    """Split ``it`` into parts of ``n``; each part is one ``xstarmap`` message of a group."""

    def __init__(self, task: Any, it: Iterable[Any] | None = None, n: int | None = None,
                 app: Celery | None = None, **options: Any) -> None:
        if isinstance(task, Mapping) and task.get("task") == "celery.chunks":
            super().__init__(dict(task), app=app)
            return
        sig = maybe_signature(task, app=app)
        super().__init__("celery.chunks", (), {"task": dict(sig or {}),
                                               "it": [list(i) for i in it or ()], "n": n},
                         options, immutable=True, app=app or (sig._app if sig else None))

    def group(self) -> group:
        kw = self["kwargs"]
        task = maybe_signature(kw["task"], app=self._app)
        assert task is not None
        return group([xstarmap(task, part, app=self._app) for part in _split(kw["it"], kw["n"])],
                     app=self._app)

    def apply_async(self, args: Iterable[Any] | None = None,
                    kwargs: Mapping[str, Any] | None = None, **options: Any) -> GroupResult:
        return self.group().apply_async(**options)

    def __call__(self, *args: Any, **kwargs: Any) -> GroupResult:
        return self.apply_async()

    def apply(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> GroupResult:
        return self.group().apply()
