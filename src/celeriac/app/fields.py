"""What each field of a task message may hold: one check per field, naming the field.

Used by :func:`celeriac.app.request.parse_request` to validate a delivered
message once, up front: every check raises
:class:`~celeriac.exceptions.DecodeError` whose text starts with the field's
path (``headers.timelimit``, ``properties.delivery_info``,
``embed.callbacks[0]``...), so the worker dead-letters a message that cannot
run as written on its first delivery, with a reason an operator can act on.

Types follow Celery's protocol v2 as Celery and kombu produce it; values
Celery accepts loosely (``retries: null``, a missing ``timelimit``) stay
accepted. Canvas signatures inside ``embed`` (callbacks, errbacks, chain,
chord) are checked recursively, with the options the worker reads from them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from ..exceptions import DecodeError

Check = Callable[[str, Any], None]


def _show(value: Any, limit: int = 80) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ cannot come out of JSON, but be safe
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def bad(field: str, expected: str, value: Any) -> DecodeError:
    """The error for ``field`` holding ``value`` instead of ``expected``."""
    return DecodeError(f"{field}: expected {expected}, got {_show(value)}")


# -- scalar checks --------------------------------------------------------------------------
def text(field: str, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise bad(field, "a string or null", value)


def required_text(field: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise bad(field, "a non-empty string", value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def count(field: str, value: Any) -> None:
    if value is not None and not (_is_int(value) and value >= 0):
        raise bad(field, "a non-negative integer or null", value)


def flag(field: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise bad(field, "true, false or null", value)


def mapping(field: str, value: Any) -> None:
    if value is not None and not isinstance(value, dict):
        raise bad(field, "an object or null", value)


def priority(field: str, value: Any) -> None:
    if value is not None and not (_is_int(value) and 0 <= value <= 255):
        raise bad(field, "an integer 0-255 or null", value)


def moment(field: str, value: Any) -> None:
    """An ETA/expiry: null, ISO 8601 text or epoch seconds."""
    if value is None or _is_number(value):
        return
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value)
            return
        except ValueError:
            pass
    raise bad(field, "an ISO 8601 date-time, epoch seconds or null", value)


def timelimit(field: str, value: Any) -> None:
    """``[hard, soft]``: each null or a non-negative number of seconds."""
    if value is None:
        return
    if not isinstance(value, (list, tuple)) or len(value) > 2:
        raise bad(field, "[hard, soft] (numbers of seconds or nulls)", value)
    for limit in value:
        if limit is not None and not (_is_number(limit) and limit >= 0):
            raise bad(field, "[hard, soft] (numbers of seconds or nulls)", value)


def text_list(field: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise bad(field, "a list of strings or null", value)


def expiration(field: str, value: Any) -> None:
    """AMQP's per-message TTL: milliseconds as text (kombu) or a number."""
    if value is None or (_is_number(value) and value >= 0):
        return
    if isinstance(value, str):
        try:
            if float(value) >= 0:
                return
        except ValueError:
            pass
    raise bad(field, "milliseconds (text or number) or null", value)


def tag(field: str, value: Any) -> None:
    if value is not None and not isinstance(value, (str, int)):
        raise bad(field, "a string or null", value)


#: header -> check; headers not listed (custom ones) may hold anything
HEADERS: dict[str, Check] = {
    "lang": text, "shadow": text, "eta": moment, "expires": moment, "group": text,
    "group_index": count, "retries": count, "timelimit": timelimit, "root_id": text,
    "parent_id": text, "argsrepr": text, "kwargsrepr": text, "origin": text,
    "ignore_result": flag, "replaced_task_nesting": count, "stamped_headers": text_list,
    "stamps": mapping, "compression": text,
}

#: property -> check
PROPERTIES: dict[str, Check] = {
    "correlation_id": text, "reply_to": text, "delivery_mode": count, "priority": priority,
    "body_encoding": text, "delivery_tag": tag, "expiration": expiration,
}

#: delivery_info key -> check
DELIVERY_INFO: dict[str, Check] = {
    "exchange": text, "routing_key": text, "redelivered": flag, "priority": priority,
}


#: check -> (types every value of which it accepts, lowest and highest int it accepts);
#: a check not listed here accepts null without looking further (and no int)
_PASSES: dict[Check, tuple[frozenset[type], float, float]] = {
    text: (frozenset({str, type(None)}), 1, 0),
    flag: (frozenset({bool, type(None)}), 1, 0),
    mapping: (frozenset({dict, type(None)}), 1, 0),
    tag: (frozenset({str, int, type(None)}), 1, 0),
    count: (frozenset({type(None)}), 0, math.inf),
    priority: (frozenset({type(None)}), 0, 255),
}
_NULL_ONLY: tuple[frozenset[type], float, float] = (frozenset({type(None)}), 1, 0)


def check_all(prefix: str, values: Mapping[str, Any], checks: Mapping[str, Check]) -> None:
    """Run ``checks`` on the fields of ``values`` present; the first failure (in the
    order of ``checks``) raises. A value of a type its check surely accepts (text for
    ``text``, a non-negative int for ``count``...) passes without the call."""
    plan = _PLANS.get(id(checks))
    if plan is None or plan[0] is not checks:
        _check_each(prefix, values, checks)
        return
    rules = plan[1]
    labels = None
    for name, value in values.items():
        rule = rules.get(name)
        if rule is None or type(value) in rule[0] or (
                type(value) is int and rule[1] <= value <= rule[2]):
            continue
        labels = labels or _labels(prefix, checks)
        try:
            checks[name](labels.get(name) or f"{prefix}.{name}", value)
        except DecodeError:  # report the first bad field in the order of checks
            _check_each(prefix, values, checks)
            raise


def _check_each(prefix: str, values: Mapping[str, Any], checks: Mapping[str, Check]) -> None:
    labels = _labels(prefix, checks)
    for name, check in checks.items():
        if name in values:
            check(labels.get(name) or f"{prefix}.{name}", values[name])


def _labels(prefix: str, checks: Mapping[str, Check]) -> dict[str, str]:
    """"prefix.name" for each check, made once per (prefix, checks) for the message's
    own fields (not for every signature's)."""
    labels = _LABELS.get((prefix, id(checks)))
    if labels is None:
        labels = {name: f"{prefix}.{name}" for name in checks}
        if len(_LABELS) < _LABELS_KEPT:
            _LABELS[(prefix, id(checks))] = labels
    return labels


def headers(values: Mapping[str, Any]) -> None:
    required_text("headers.task", values.get("task"))
    required_text("headers.id", values.get("id"))
    check_all("headers", values, HEADERS)


def properties(values: Mapping[str, Any]) -> None:
    check_all("properties", values, PROPERTIES)
    info = values.get("delivery_info")
    mapping("properties.delivery_info", info)
    if info:
        check_all("properties.delivery_info", info, DELIVERY_INFO)


# -- canvas signatures inside embed --------------------------------------------------------
def _sig_list(field: str, value: Any) -> None:
    """null, one signature or a list of signatures (Celery accepts a single link too)."""
    if value is None:
        return
    if isinstance(value, dict):
        signature(field, value)
        return
    if not isinstance(value, (list, tuple)):
        raise bad(field, "a list of signatures or null", value)
    for index, item in enumerate(value):
        signature(f"{field}[{index}]", item)


#: signature option -> check (the options the worker reads when it applies a signature)
OPTIONS: dict[str, Check] = {
    "task_id": text, "queue": text, "routing_key": text, "exchange": text,
    "priority": priority, "countdown": lambda f, v: _seconds(f, v, signed=True),
    "eta": moment, "expires": moment, "group_id": text, "group_index": count,
    "chord_size": count, "parent_id": text, "root_id": text, "shadow": text,
    "time_limit": lambda f, v: _seconds(f, v), "soft_time_limit": lambda f, v: _seconds(f, v),
    "headers": mapping,
    "link": _sig_list, "link_error": _sig_list, "retries": count,
    "ignore_result": flag, "immutable": flag,
}


#: (prefix, id of a checks mapping: module constants) -> name -> label
_LABELS: dict[tuple[str, int], dict[str, str]] = {}
_LABELS_KEPT = 16

#: id of a module's checks mapping -> (that mapping, field -> what surely passes its check)
_PLANS = {id(checks): (checks, {name: _PASSES.get(check, _NULL_ONLY)
                                for name, check in checks.items()})
          for checks in (HEADERS, PROPERTIES, DELIVERY_INFO, OPTIONS)}


def _seconds(field: str, value: Any, signed: bool = False) -> None:
    if value is not None and not (_is_number(value) and (signed or value >= 0)):
        raise bad(field, "a number of seconds or null", value)


def signature(field: str, value: Any, depth: int = 0) -> None:
    """A signature dict as Celery serializes one (``task``, ``args``, ``kwargs``, ``options``,
    ``subtask_type``, ``immutable``), composite ones (chain, group, chord) with their parts."""
    if depth > 64:
        raise DecodeError(f"{field}: signatures nested more than 64 levels deep")
    if not isinstance(value, dict) or not isinstance(value.get("task"), str) \
            or not value.get("task"):
        raise bad(field, "a signature (an object with a \"task\" name)", value)
    args, kwargs, options = value.get("args"), value.get("kwargs"), value.get("options")
    if args is not None and not isinstance(args, (list, tuple)):
        raise bad(f"{field}.args", "a list or null", args)
    mapping(f"{field}.kwargs", kwargs)
    mapping(f"{field}.options", options)
    text(f"{field}.subtask_type", value.get("subtask_type"))
    flag(f"{field}.immutable", value.get("immutable"))
    if options:
        check_all(f"{field}.options", options, OPTIONS)
        for key in ("chain", "chord"):
            if options.get(key) is not None:
                _nested(f"{field}.options.{key}", options[key], depth)
    kind = value.get("subtask_type")
    kwargs = kwargs or {}
    if kind in ("chain", "group"):
        _members(f"{field}.kwargs.tasks", kwargs.get("tasks"), depth)
    elif kind == "chord":
        header = kwargs.get("header")
        if isinstance(header, dict):
            signature(f"{field}.kwargs.header", header, depth + 1)
        else:
            _members(f"{field}.kwargs.header", header, depth)
        signature(f"{field}.kwargs.body", kwargs.get("body"), depth + 1)


def _nested(field: str, value: Any, depth: int) -> None:
    if isinstance(value, dict):
        signature(field, value, depth + 1)
    else:
        _members(field, value, depth)


def _members(field: str, value: Any, depth: int) -> None:
    if not isinstance(value, (list, tuple)):
        raise bad(field, "a list of signatures", value)
    for index, item in enumerate(value):
        signature(f"{field}[{index}]", item, depth + 1)


def embed(value: Any) -> dict[str, Any]:
    """The body's third element: ``callbacks``, ``errbacks``, ``chain``, ``chord``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad("embed", "an object or null", value)
    _sig_list("embed.callbacks", value.get("callbacks"))
    _sig_list("embed.errbacks", value.get("errbacks"))
    chain = value.get("chain")
    if chain is not None:
        _members("embed.chain", chain, 0)
    if value.get("chord") is not None:
        signature("embed.chord", value["chord"])
    return value


def arguments(args: Any, kwargs: Any) -> None:
    if not isinstance(args, (list, tuple)):
        raise bad("body.args", "a list", args)
    if not isinstance(kwargs, dict):
        raise bad("body.kwargs", "an object", kwargs)
    for key in kwargs:
        if not isinstance(key, str):
            raise bad("body.kwargs", "an object with string keys", kwargs)
