"""``chain``: tasks run one after the other, each receiving the previous result.

The first task is published with the remaining steps in the message's
``chain`` field, reversed (next step last) as Celery stores it, every step
with a pre-assigned ``task_id``; the worker continues the chain
(:mod:`celeriac.canvas.callbacks`). A group followed by a step becomes a chord.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .group import chord, group
from .signature import Composite, Signature, register_type, sig_list

if TYPE_CHECKING:
    pass


class chain(Composite):
    """Tasks run one after the other, each receiving the previous result."""

    subtask_kind = "chain"

    def clone(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **opts: Any) -> Signature:
        new = chain(*[t.clone() for t in self.tasks], app=self._app,
                    **{**self["options"], **opts})
        new["immutable"] = self.immutable
        if (args or kwargs) and new.tasks:
            new["kwargs"]["tasks"][0] = new.tasks[0].clone(args, kwargs)
        return new

    # -- preparing ----------------------------------------------------------------
    def prepare_steps(self, options: Mapping[str, Any]) -> list[Signature]:
        """Clone and flatten the steps; a group followed by a step becomes a chord."""
        flat: list[Signature] = []
        for step in self.tasks:
            if isinstance(step, chain) and not step["options"]:
                flat.extend(t.clone() for t in step.tasks)
            else:
                flat.append(step.clone())
        steps: list[Signature] = []
        for step in flat:
            prev = steps[-1] if steps else None
            if isinstance(prev, group):
                steps.pop()
                step = chord(prev.tasks, step, app=self._app, **prev["options"])
            steps.append(step)
        app = self._app
        for errback in sig_list(options.get("link_error") or self["options"].get("link_error"),
                                app):
            for step in steps:
                step.link_error(errback)
        for callback in sig_list(options.get("link") or self["options"].get("link"), app):
            steps[-1].link(callback)
        return steps

    def freeze_steps(self, steps: list[Signature], _id: str | None = None,
                     group_id: str | None = None, chord: Signature | None = None,
                     group_index: int | None = None, root_id: str | None = None) -> Any:
        """Pre-assign every step's id; the last step joins the group/chord; return its result."""
        prev: Any = None
        result: Any = None
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            if last:
                result = step.freeze(_id, group_id=group_id, chord=chord,
                                     group_index=group_index, root_id=root_id)
            else:
                result = step.freeze(root_id=root_id)
            if prev is not None and getattr(result, "parent", None) is None:
                result.parent = prev
            prev = result
        return result

    def freeze(self, _id: str | None = None, group_id: str | None = None,
               chord: Signature | None = None, root_id: str | None = None,
               parent_id: str | None = None, group_index: int | None = None) -> Any:
        steps = self.prepare_steps({})
        self["kwargs"]["tasks"] = steps
        self["options"].pop("link", None)
        self["options"].pop("link_error", None)
        return self.freeze_steps(steps, _id, group_id, chord, group_index, root_id)

    # -- calling ----------------------------------------------------------------------
    def apply_async(self, args: Iterable[Any] | None = None,
                    kwargs: Mapping[str, Any] | None = None, **options: Any) -> Any:
        app = self.app
        if app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        options = {**self["options"], **options}
        steps = self.prepare_steps(options)
        if not steps:
            return None
        result = self.freeze_steps(
            steps, options.pop("task_id", None), options.pop("group_id", None),
            options.pop("chord", None), options.pop("group_index", None),
            options.get("root_id"))
        options.pop("link", None)
        options.pop("link_error", None)
        # reversed: the next step is last; an inherited chain (Task.replace) runs after ours
        rest = list(options.pop("chain", None) or []) + [dict(s) for s in reversed(steps[1:])]
        steps[0].apply_async(args, kwargs, chain=rest or None, **options)
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Any:
        """Run every step here, in order (eager mode)."""
        prev: Any = None
        args = tuple(args or ())
        for step in self.prepare_steps(options):
            res = step.apply(args, kwargs) if prev is None else step.apply((prev.get(),))
            if prev is not None and getattr(res, "parent", None) is None:
                res.parent = prev
            prev, kwargs = res, None
            if not res.successful():
                break
        return prev

    def __repr__(self) -> str:
        return " | ".join(repr(t) for t in self.tasks) or "chain()"


register_type("chain", chain)
