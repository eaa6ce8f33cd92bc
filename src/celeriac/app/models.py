"""``@app.task(pydantic=True)``: Celery's pydantic support (arguments validated into models,
a returned model dumped), with ``pydantic_strict``, ``pydantic_context`` and
``pydantic_dump_kwargs``.

When the worker runs the task, each argument whose annotation is a pydantic
``BaseModel`` subclass (or ``Optional[...]`` of one, when not None) is validated
with ``Model.model_validate(value, strict=, context=)`` (the context also holds
``celery_app`` and ``celery_task_name``, as in Celery); a returned model of the
annotated return class is dumped with ``model_dump(mode="json", **dump_kwargs)``.
When the task is called, model instances passed for such parameters are dumped the
same way, so the message carries plain JSON. pydantic is needed only by tasks that
ask for it: without it, ``pydantic=True`` is refused when the task is defined.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import typing
from collections.abc import Callable
from typing import Any

from ..exceptions import ImproperlyConfigured


def _optional_of(annotation: Any) -> Any:
    """``X`` for ``Optional[X]``/``X | None``, else None."""
    args = typing.get_args(annotation)
    if args and type(None) in args and len(args) == 2:
        return next(a for a in args if a is not type(None))
    return None


class ModelCalls:
    """Validates a task's arguments into models and dumps its models (one per task)."""

    def __init__(self, app: Any, fun: Callable[..., Any], name: str, strict: bool = False,
                 context: dict[str, Any] | None = None,
                 dump_kwargs: dict[str, Any] | None = None) -> None:
        try:
            self.base: Any = importlib.import_module("pydantic").BaseModel
        except ModuleNotFoundError as exc:
            raise ImproperlyConfigured(f"task {name}: pydantic=True needs pydantic "
                                       "(pip install pydantic)") from exc
        self.app, self.fun, self.name, self.strict = app, fun, name, strict
        self.context = dict(context or {})
        self.dump_kwargs = {"mode": "json", **(dump_kwargs or {})}
        self.signature = inspect.signature(fun)
        try:
            self.hints = typing.get_type_hints(fun)
        except (NameError, AttributeError, TypeError):
            self.hints = {}

    def _annotation(self, name: str) -> Any:
        if name in self.hints:
            return self.hints[name]
        if name == "return":
            return self.signature.return_annotation
        return self.signature.parameters[name].annotation

    def _model(self, name: str, value: Any) -> Any:
        annotation = self._annotation(name)
        inner = _optional_of(annotation)
        if inner is not None and value is not None:
            annotation = inner
        if inspect.isclass(annotation) and issubclass(annotation, self.base):
            return annotation
        return None

    def wrap(self) -> Callable[..., Any]:
        fun = self.fun

        @functools.wraps(fun)
        def run(*args: Any, **kwargs: Any) -> Any:
            bound = self.signature.bind(*args, **kwargs)
            for name, value in bound.arguments.items():
                model = self._model(name, value)
                if model is not None:
                    bound.arguments[name] = model.model_validate(
                        value, strict=self.strict,
                        context={**self.context, "celery_app": self.app,
                                 "celery_task_name": self.name})
            returned: Any = fun(*bound.args, **bound.kwargs)
            wanted = self._annotation("return")
            wanted = _optional_of(wanted) or wanted
            if inspect.isclass(wanted) and isinstance(returned, self.base) \
                    and isinstance(returned, wanted):
                return typing.cast(Any, returned).model_dump(**self.dump_kwargs)
            return returned

        return run

    def _dump(self, name: str, value: Any) -> Any:
        model = self._model(name, value) if isinstance(value, self.base) else None
        return value.model_dump(**self.dump_kwargs) if model is not None \
            and isinstance(value, model) else value

    def dump_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any], *,
                       bound: bool = False) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Models passed for model parameters as plain JSON data (the caller's side;
        ``bound``: the function's first parameter is the task, not passed here)."""
        kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        params = [p.name for p in self.signature.parameters.values() if p.kind in kinds]
        params = params[1:] if bound else params
        out_args = tuple(self._dump(params[i], v) if i < len(params) else v
                         for i, v in enumerate(args))
        out_kwargs = {k: self._dump(k, v) if k in self.signature.parameters else v
                      for k, v in kwargs.items()}
        return out_args, out_kwargs
