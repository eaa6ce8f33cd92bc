"""Signatures: a task call that can be passed around, stored in messages and applied later.

A :class:`Signature` is a dict with Celery's keys (``task, args, kwargs,
options, subtask_type, immutable``) so it serialises into a message exactly
as Celery's does and a signature built by Celery runs here. Partial
application prepends arguments unless the signature is immutable (``.si()``).

Composite signatures (chain, group, chord, chunks) subclass it in their own
modules and register their ``subtask_type`` with :func:`register_type`, which
is how a signature decoded from a message becomes the right class again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from ..app.state import get_current_app

if TYPE_CHECKING:
    from ..app.base import Celery


def reprcall(name: str, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None) -> str:
    """``name(1, 2, x=3)`` as Celery prints a signature."""
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in (kwargs or {}).items()]
    return f"{name}({', '.join(parts)})"


class Signature(dict[str, Any]):
    """A task name with arguments and options."""

    _app: Celery | None = None
    _type: Any = None

    def __init__(self, task: Any = None, args: Iterable[Any] | None = None,
                 kwargs: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None,
                 type: Any = None, subtask_type: str | None = None, immutable: bool = False,
                 app: Celery | None = None, **ex: Any) -> None:
        self._app = app
        if isinstance(task, Mapping):  # from a dict, e.g. decoded from a message
            super().__init__(task)
            self.setdefault("args", [])
            self.setdefault("kwargs", {})
            self.setdefault("options", {})
            self.setdefault("subtask_type", None)
            self.setdefault("immutable", False)
            self["args"] = list(self["args"] or [])
            self["kwargs"] = dict(self["kwargs"] or {})
            self["options"] = dict(self["options"] or {})
            return
        name = task
        if not isinstance(task, str) and task is not None:
            self._type = task
            name = task.name
        super().__init__(task=name, args=list(args or ()), kwargs=dict(kwargs or {}),
                         options={**dict(options or {}), **ex}, subtask_type=subtask_type,
                         immutable=immutable)
        if type is not None:
            self._type = type

    # -- fields -------------------------------------------------------------
    @property
    def task(self) -> str:
        return str(self["task"])

    name = task

    @property
    def args(self) -> tuple[Any, ...]:
        return tuple(self["args"])

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self["kwargs"])

    @property
    def options(self) -> dict[str, Any]:
        return dict(self["options"])

    @property
    def immutable(self) -> bool:
        return bool(self.get("immutable"))

    @property
    def subtask_type(self) -> str | None:
        return self.get("subtask_type")

    @property
    def id(self) -> str | None:
        return self["options"].get("task_id")

    @property
    def app(self) -> Celery:
        if self._app is not None:
            return self._app
        if self._type is not None and getattr(self._type, "_app", None) is not None:
            return self._type._app
        return get_current_app()

    @property
    def type(self) -> Any:
        if self._type is None:
            self._type = self.app.tasks[self.task]
        return self._type

    # -- building -------------------------------------------------------------
    def _merge(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
               options: Mapping[str, Any] | None = None) -> tuple[tuple[Any, ...],
                                                                   dict[str, Any], dict[str, Any]]:
        opts = {**self["options"], **(options or {})}
        if self.immutable:
            return self.args, self.kwargs, opts
        return (tuple(args or ()) + self.args, {**self.kwargs, **(kwargs or {})}, opts)

    def clone(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **opts: Any) -> Signature:
        a, k, o = self._merge(args, kwargs, opts)
        sig = self.__class__.from_dict(
            {**dict(self), "args": list(a), "kwargs": k,
             "options": {key: (list(v) if isinstance(v, list) else v) for key, v in o.items()}},
            app=self._app)
        sig._type = self._type
        return sig

    partial = clone

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        if immutable is not None:
            self["immutable"] = immutable
        self["options"].update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self["immutable"] = immutable

    def link(self, callback: Signature) -> Signature:
        self["options"].setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        self["options"].setdefault("link_error", []).append(errback)
        return errback

    def on_error(self, errback: Signature) -> Signature:
        self.link_error(errback)
        return self

    def freeze(self, _id: str | None = None, group_id: str | None = None,
               chord: Signature | None = None, root_id: str | None = None,
               parent_id: str | None = None, group_index: int | None = None) -> Any:
        """Pre-assign the task id (and group membership); return the future result."""
        opts = self["options"]
        if _id is not None:
            opts["task_id"] = _id
        opts.setdefault("task_id", str(uuid.uuid4()))
        if group_id is not None:
            opts["group_id"] = group_id
        if group_index is not None:
            opts["group_index"] = group_index
        if chord is not None:
            opts["chord"] = chord
        if root_id is not None:
            opts.setdefault("root_id", root_id)
        if parent_id is not None:
            opts.setdefault("parent_id", parent_id)
        return self.app.AsyncResult(opts["task_id"], task_name=self.task)

    # -- composition -----------------------------------------------------------
    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        """``a | b``: a chain; ``group | task``: a chord (as in Celery)."""
        if not isinstance(other, Signature):
            return NotImplemented
        chain, group, chord = kind("chain"), kind("group"), kind("chord")
        if isinstance(self, group):
            if isinstance(other, group):
                return chain(self, other, app=self._app)
            return chord(self.tasks, other, app=self._app)
        if isinstance(self, chord) and not isinstance(other, group):
            joined: Any = self.clone()
            joined.body = joined.body | other
            return joined
        mine = list(self.tasks) if isinstance(self, chain) else [self]
        theirs = list(other.tasks) if isinstance(other, chain) else [other]
        return chain(*mine, *theirs, app=self._app)

    # -- calling -------------------------------------------------------------
    def apply_async(self, args: Iterable[Any] | None = None,
                    kwargs: Mapping[str, Any] | None = None, **options: Any) -> Any:
        a, k, o = self._merge(args, kwargs, options)
        if self._type is not None or self.task in self.app.tasks:
            return self.type.apply_async(a, k, **o)
        return self.app.send_task(self.task, a, k, **o)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Any:
        a, k, o = self._merge(args, kwargs, options)
        return self.type.apply(a, k, **o)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        a, k, _ = self._merge(args, kwargs)
        return self.type(*a, **k)

    def __invert__(self) -> Any:
        return self.apply_async().get()

    # -- (de)serialisation --------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping[str, Any], app: Celery | None = None) -> Signature:
        kind = d.get("subtask_type")
        if kind and kind in _SUBCLASSES and cls is Signature:
            return _SUBCLASSES[kind].from_dict(d, app=app)
        return cls(d, app=app)

    def __reduce__(self) -> Any:
        return signature, (dict(self),)

    def __json__(self) -> dict[str, Any]:
        return dict(self)

    def __repr__(self) -> str:
        return reprcall(self.task, self.args, self.kwargs)

    def __deepcopy__(self, memo: Any) -> Signature:
        import copy

        sig = self.__class__.from_dict(copy.deepcopy(dict(self), memo), app=self._app)
        sig._type = self._type
        return sig

    def __copy__(self) -> Signature:
        return self.clone()


#: Signature subclasses by ``subtask_type`` (chain, group, chord...), for ``from_dict``.
_SUBCLASSES: dict[str, type[Signature]] = {}


def register_type(name: str, cls: type[Signature]) -> None:
    """Make ``from_dict`` (and ``|``) build ``cls`` for signatures of ``subtask_type`` name."""
    _SUBCLASSES[name] = cls


def kind(name: str) -> Any:
    """The class registered for ``subtask_type`` ``name`` (chain, group, chord)."""
    return _SUBCLASSES[name]


def signature(varies: Any, *args: Any, **kwargs: Any) -> Signature:
    """Create a signature from a task name, a task, or a signature dict."""
    app = kwargs.pop("app", None)
    if isinstance(varies, Signature):
        return varies.clone()
    if isinstance(varies, Mapping):
        return Signature.from_dict(varies, app=app)
    kwargs["app"] = app
    return Signature(varies, *args, **kwargs)


subtask = signature


def maybe_signature(d: Any, app: Celery | None = None, clone: bool = False) -> Signature | None:
    """Turn a dict into a signature; pass signatures through (cloned if asked)."""
    if d is None:
        return None
    if isinstance(d, Signature):
        return d.clone() if clone else d
    if isinstance(d, Mapping):
        return Signature.from_dict(d, app=app)
    raise TypeError(f"not a signature: {d!r}")


def sig_list(value: Any, app: Celery | None = None) -> list[Signature]:
    """``link``/``link_error`` option values: one signature or a list, as signatures."""
    if not value:
        return []
    items = [value] if isinstance(value, Mapping) else list(value)
    return [s for s in (maybe_signature(i, app=app) for i in items) if s is not None]


class Composite(Signature):
    """A signature made of member signatures (chain, group): members and their app.

    Built from members (``chain(a, b)``, ``group([a, b])``) or from its own dict
    form (decoded from a message); ``subtask_kind`` names the subclass
    (``celery.<kind>`` is its task name) and ``_members`` turns items into
    member signatures.
    """

    subtask_kind: ClassVar[str] = ""

    def __init__(self, *tasks: Any, app: Celery | None = None, **options: Any) -> None:
        kind = self.subtask_kind
        if len(tasks) == 1 and isinstance(tasks[0], Mapping) and "task" in tasks[0]:
            d = dict(tasks[0])
            if d.get("subtask_type") == kind:
                super().__init__(d, app=app)
                self["kwargs"]["tasks"] = self._members(self["kwargs"].get("tasks") or [], app)
                return
        items: Iterable[Any] = tasks
        if len(tasks) == 1 and not isinstance(tasks[0], Mapping):
            items = tasks[0]
        members = self._members(items, app)
        super().__init__(f"celery.{kind}", (), {"tasks": members}, options, app=app,
                         subtask_type=kind)
        if self._app is None and members:
            self._app = members[0]._app

    def _members(self, items: Iterable[Any], app: Celery | None) -> list[Signature]:
        return [s for s in (maybe_signature(t, app=app) for t in items) if s is not None]

    @property
    def tasks(self) -> list[Signature]:
        return list(self["kwargs"]["tasks"])

    @property
    def app(self) -> Celery:
        if self._app is None:
            for member in self.tasks:
                if member._app is not None or member._type is not None:
                    return member.app
        return super().app
