"""Parallel canvas primitives: ``group`` and ``chord`` (a group with a body).

A group publishes its N members in one batched ``broker.publish_many`` call,
every message with the same ``group`` header and ``group_index`` 0..N-1, and
returns a :class:`~celeriac.results.group.GroupResult` in call order. A chord
publishes its header as a group whose messages carry the body signature in
``embed.chord`` (with the body's pre-assigned ``task_id``, the header
``group_id`` and ``chord_size``); the worker side of the join is
:mod:`celeriac.canvas.join`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..app.publish import add_to_parent
from ..results.async_result import EagerResult
from ..results.group import GroupResult
from .join import chord_error
from .publish import publish_members
from .signature import Composite, Signature, maybe_signature, register_type, sig_list

if TYPE_CHECKING:
    from ..app.base import Celery


def _flatten(items: Iterable[Any], app: Celery | None) -> list[Signature]:
    out: list[Signature] = []
    for item in items:
        sig = maybe_signature(item, app=app)
        if sig is None:
            continue
        if isinstance(sig, group) and not sig["options"]:
            out.extend(sig.tasks)
        else:
            out.append(sig)
    return out


class group(Composite):
    """Tasks run in parallel; the result is a GroupResult in call order."""

    subtask_kind = "group"

    def _members(self, items: Iterable[Any], app: Celery | None) -> list[Signature]:
        return _flatten(items, app)

    def clone(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **opts: Any) -> Signature:
        new = group([t.clone(args, kwargs) for t in self.tasks], app=self._app,
                    **{**self["options"], **opts})
        new["immutable"] = self.immutable
        return new

    def __len__(self) -> int:
        return len(self["kwargs"]["tasks"])

    def skew(self, start: float = 1.0, stop: float | None = None,
             step: float = 1.0) -> group:
        """Spread the members' start (Celery's): countdowns ``start``, ``start + step``...
        up to ``stop``, the last one repeated for the remaining members."""
        countdown = float(start)
        for index, task in enumerate(self.tasks):
            if index and (not stop or countdown + step <= stop):
                countdown += step
            task.set(countdown=countdown)
        return self

    # -- freezing -----------------------------------------------------------------------
    def freeze(self, _id: str | None = None, group_id: str | None = None,
               chord: Signature | None = None, root_id: str | None = None,
               parent_id: str | None = None, group_index: int | None = None) -> GroupResult:
        """Assign the group id and member ids; members carry ``chord`` when in a header."""
        gid = _id or self["options"].get("task_id") or str(uuid.uuid4())
        self["options"]["task_id"] = gid
        results = [member.freeze(group_id=gid, chord=chord, root_id=root_id,
                                 parent_id=parent_id, group_index=index)
                   for index, member in enumerate(self.tasks)]
        return GroupResult(gid, results, app=self.app)

    # -- calling ------------------------------------------------------------------------
    def apply_async(self, args: Iterable[Any] | None = None,
                    kwargs: Mapping[str, Any] | None = None, **options: Any) -> GroupResult:
        app = self.app
        if app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        options = {**self["options"], **options}
        if options.get("chain") or options.get("chord"):
            # a group that must act as one step (Task.replace in a chain or a chord
            # header): join it into one result, as Celery does with celery.accumulate
            body = app.tasks["celery.accumulate"].s(index=0)
            joined = chord(self.tasks, body, app=app)
            return joined.apply_async(args, kwargs, **options)
        options.pop("group_index", None)
        gid = options.pop("task_id", None) or options.pop("group_id", None)
        members = [m.clone(args, kwargs) for m in self.tasks]
        # as Celery: errbacks on every member, callbacks on the first one only (which
        # cannot pass its siblings' results), both made immutable
        for errback in sig_list(options.pop("link_error", None), app):
            for m in members:
                m.link_error(errback.clone().set(immutable=True))
        for callback in sig_list(options.pop("link", None), app):
            if members:
                members[0].link(callback.clone().set(immutable=True))
        frozen = group(members, app=app)
        result = frozen.freeze(gid, root_id=options.get("root_id"),
                               parent_id=options.get("parent_id"))
        publish_members(app, frozen.tasks, options)
        if options.get("add_to_parent", True):
            add_to_parent(result)  # the group, not its members, as Celery
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> GroupResult:
        return self.apply_async(args, kwargs)

    def apply(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> GroupResult:
        gid = options.get("task_id") or self["options"].get("task_id") or str(uuid.uuid4())
        results = [m.apply(args, kwargs) for m in self.tasks]
        return GroupResult(gid, results, app=self.app)

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(t) for t in self.tasks)}])"


class chord(Signature):
    """A header group whose results, in order, are passed to the body once all finished."""

    header_id: str | None = None
    header_result: GroupResult | None = None

    def __init__(self, header: Any = None, body: Any = None, args: Iterable[Any] | None = None,
                 kwargs: Mapping[str, Any] | None = None, app: Celery | None = None,
                 **options: Any) -> None:
        if isinstance(header, Mapping) and header.get("subtask_type") == "chord":
            super().__init__(dict(header), app=app)
            kw = self["kwargs"]
        else:
            super().__init__("celery.chord", args, {"header": header, "body": body,
                                                    "kwargs": dict(kwargs or {})},
                             options, app=app, subtask_type="chord")
            kw = self["kwargs"]
        head = kw.get("header")
        if isinstance(head, Mapping) and "task" in head:
            head = group(head, app=app).tasks if head.get("subtask_type") == "group" else [head]
        kw["header"] = _flatten(head or [], app)
        kw["body"] = maybe_signature(kw.get("body"), app=app)
        if self._app is None:
            self._app = next((t._app for t in kw["header"] if t._app is not None), None)

    @property
    def tasks(self) -> list[Signature]:
        return list(self["kwargs"]["header"])

    @property
    def body(self) -> Signature:
        return self["kwargs"]["body"]

    @body.setter
    def body(self, value: Signature) -> None:
        self["kwargs"]["body"] = value

    @property
    def app(self) -> Celery:
        if self._app is None:
            for sig in [*self.tasks, self.body]:
                if sig is not None and (sig._app is not None or sig._type is not None):
                    return sig.app
        return super().app

    def clone(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **opts: Any) -> Signature:
        body = self.body.clone() if self.body is not None else None
        new = chord([t.clone(args, kwargs) for t in self.tasks], body, app=self._app,
                    **{**self["options"], **opts})
        return new

    # -- freezing -------------------------------------------------------------------------
    def freeze(self, _id: str | None = None, group_id: str | None = None,
               chord: Signature | None = None, root_id: str | None = None,
               parent_id: str | None = None, group_index: int | None = None) -> Any:
        """Pre-assign the header group id, the body id and the chord size.

        The body joins an outer group/chord when this chord is a member of one;
        otherwise its ``group_id`` is the header's, as Celery sends it.
        """
        header = self.tasks
        gid = (_joined_group(header[0]) if header else None) or str(uuid.uuid4())
        self.header_id = gid
        body = self.body
        body_result = body.freeze(_id, group_id=group_id, chord=chord, root_id=root_id,
                                  group_index=group_index)
        if group_id is None:
            body["options"].setdefault("group_id", gid)
        body["options"]["chord_size"] = len(header)
        results = [m.freeze(group_id=gid, chord=body, root_id=root_id, parent_id=parent_id,
                            group_index=i) for i, m in enumerate(header)]
        self.header_result = GroupResult(gid, results, app=self.app)
        if getattr(body_result, "parent", None) is None:
            body_result.parent = self.header_result
        return body_result

    # -- calling ----------------------------------------------------------------------------
    def __call__(self, body: Any = None, **options: Any) -> Any:
        if body is not None:
            self.body = maybe_signature(body, app=self._app)  # type: ignore[assignment]
        return self.apply_async((), **options)

    def apply_async(self, args: Iterable[Any] | None = None,
                    kwargs: Mapping[str, Any] | None = None, **options: Any) -> Any:
        app = self.app
        if self.body is None:
            raise ValueError("chord has no body")
        if app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        # a copy is frozen and sent, so applying the same chord twice makes two chords
        joined: chord = self.clone(args, kwargs)  # type: ignore[assignment]
        return joined._send({**self["options"], **options})

    def _send(self, options: dict[str, Any]) -> Any:
        app = self.app
        body = self.body
        for callback in sig_list(options.pop("link", None), app):
            body.link(callback)
        for errback in sig_list(options.pop("link_error", None), app):
            body.link_error(errback)
        rest = options.pop("chain", None)
        if rest:
            body["options"]["chain"] = list(rest)
        result = self.freeze(options.pop("task_id", None), options.pop("group_id", None),
                             options.pop("chord", None), options.get("root_id"),
                             options.get("parent_id"), options.pop("group_index", None))
        header = self.tasks
        if not header:
            body.apply_async(([],), **options)
            return result
        if app.backend is not None:
            app.backend.check_chords()  # rpc:// cannot join one: refused before sending
        _set_celery_chord_size(app, str(self.header_id), len(header))
        if self.header_result is not None and app.backend is not None:
            self.header_result.save()  # lets a redelivered header task recover the join
        publish_members(app, header, options)
        return result

    def apply(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Any:
        """Run the header, then the body, here (eager mode)."""
        header = [m.apply(args, kwargs) for m in self.tasks]
        for res in header:
            if not res.successful():
                exc = chord_error(res.id, res.result)
                return EagerResult(self.body.id or str(uuid.uuid4()), exc, "FAILURE",
                                   app=self.app)
        result = self.body.apply(([r.get() for r in header],))
        result.parent = GroupResult(str(uuid.uuid4()), header, app=self.app)
        return result

    def __repr__(self) -> str:
        return f"chord([{', '.join(repr(t) for t in self.tasks)}], {self.body!r})"


def _joined_group(member: Signature) -> str | None:
    """The group a frozen header member reports to (a chain's last step reports)."""
    tasks = member["kwargs"].get("tasks") if member.subtask_type == "chain" else None
    last = maybe_signature(tasks[-1]) if tasks else member
    return last["options"].get("group_id") if last is not None else None


def _set_celery_chord_size(app: Celery, group_id: str, size: int) -> None:
    """On Redis, also write Celery's ``<group key>.s`` so a Celery worker can join it."""
    backend = app.backend
    if backend is not None and "redis" in getattr(backend, "schemes", ()):
        backend._set_raw(f"{backend.group_key(group_id)}.s", str(size), backend.expires)


register_type("group", group)
register_type("chord", chord)
