"""``Task.request``: the execution context of the running task, with Celery's fields."""

from __future__ import annotations

from typing import Any

_FIELDS: dict[str, Any] = {
    "id": None, "args": (), "kwargs": {}, "retries": 0, "is_eager": False, "eta": None,
    "expires": None, "group": None, "group_index": None, "chord": None, "chain": None,
    "callbacks": None, "errbacks": None, "root_id": None, "parent_id": None,
    "correlation_id": None, "reply_to": None, "hostname": None, "delivery_info": {},
    "headers": None, "properties": {}, "timelimit": (None, None), "origin": None,
    "ignore_result": False, "stamps": {}, "stamped_headers": None, "called_directly": True,
    "taskset": None, "utc": True, "replaced_task_nesting": 0, "shadow": None,
    "argsrepr": None, "kwargsrepr": None, "task": None, "lang": "py",
}

#: the fields whose default is a (mutable) empty dict
_MUTABLE = tuple(k for k, v in _FIELDS.items() if isinstance(v, dict))
assert all(not _FIELDS[k] for k in _MUTABLE)  # empty: a new {} is their copy


class Context:
    """Attribute bag with Celery's request fields; unknown attributes read as None."""

    def __init__(self, *args: dict[str, Any], **kwargs: Any) -> None:
        fields = self.__dict__
        fields.update(_FIELDS)
        for key in _MUTABLE:  # each request its own dicts
            fields[key] = {}
        for mapping in args:
            self.update(mapping)
        self.update(kwargs)

    @classmethod
    def of(cls, fields: dict[str, Any]) -> Any:
        """A context with ``fields`` over the defaults (the worker's one per delivery:
        no keyword arguments to unpack)."""
        obj = cls.__new__(cls)
        own = obj.__dict__
        own.update(_FIELDS)
        for key in _MUTABLE:
            if key not in fields:
                own[key] = {}
        own.update(fields)
        return obj

    def update(self, mapping: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if mapping:
            self.__dict__.update(mapping)
        self.__dict__.update(kwargs)

    def get(self, key: str, default: Any = None) -> Any:
        return self.__dict__.get(key, default)

    def __getattr__(self, name: str) -> Any:
        """Unknown fields read as None; custom message headers read as fields, as in
        Celery (``apply_async(headers={"tenant": ...})`` -> ``self.request.tenant``)."""
        if name.startswith("__"):
            raise AttributeError(name)
        headers = self.__dict__.get("headers")
        if isinstance(headers, dict):
            return headers.get(name)
        return None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"<Context: {self.__dict__!r}>"

    @property
    def children(self) -> list[Any]:
        value = self.__dict__.setdefault("_children", [])
        return value
