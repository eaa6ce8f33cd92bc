"""Reading celeriac's configuration from a Pyramid (PasteDeploy) ``.ini`` file.

The sections pyramid_celery reads, with the same meaning:

* ``[celery]``: settings, new lower-case names (``broker_url``) or Celery's old
  upper-case ones (``BROKER_URL``, ``CELERY_IMPORTS``). Values are text and are
  turned into the setting's type: booleans (``true``/``false``/``yes``/``no``/
  ``on``/``off``/``1``/``0``), numbers, lists written one per line (or separated
  by spaces or commas), dictionaries as JSON.
* ``[celery:NAME]``: a dictionary setting written key by key
  (``[celery:broker_transport_options]``); values are JSON or text.
* ``[celerybeat:NAME]``: one ``beat_schedule`` entry: ``task``, ``type``
  (``timedelta``, ``crontab`` or ``integer``), ``schedule`` (JSON: the
  timedelta's or crontab's keyword arguments, or seconds), and optional ``args``,
  ``kwargs`` and ``options`` (JSON).
* ``[celeryroute:TASK]``: a ``task_routes`` entry (``queue``, ``routing_key``).

``%(here)s`` (the file's directory), ``%(__file__)s`` and the ``--ini-var``
values are interpolated, as PasteDeploy does. Every error names the file, the
section and the key. :func:`apply_logging` applies the file's ``[loggers]``
sections (``logging.config.fileConfig``).
"""

from __future__ import annotations

import configparser
import json
import logging.config
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celeriac.config.defaults import DEFAULTS
from celeriac.config.old_names import OLD_NAMES
from celeriac.exceptions import ImproperlyConfigured
from celeriac.schedules import crontab

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
#: settings whose default is None but whose value is a number
_NUMBERS = {"task_time_limit", "task_soft_time_limit", "worker_concurrency",
            "worker_max_tasks_per_child", "worker_max_memory_per_child",
            "result_failure_expires", "beat_cron_starting_deadline",
            "worker_heartbeat_interval", "redis_max_connections",
            "redis_socket_connect_timeout", "task_default_priority", "result_expires",
            "beat_max_loop_interval"}
_BOOLEANS = {"task_reject_on_worker_lost", "use_celeryconfig"}
_BEAT_KEYS = {"task", "type", "schedule", "args", "kwargs", "options"}
_ROUTE_KEYS = {"queue", "routing_key", "exchange", "priority"}


@dataclass
class IniFile:
    """One ini file: its celeriac settings and whether it configures logging."""

    path: str
    settings: dict[str, Any] = field(default_factory=dict)
    has_logging: bool = False
    variables: dict[str, str] = field(default_factory=dict)


def parse_variables(text: str | None) -> dict[str, str]:
    """``--ini-var a=1,b=2`` as a dict (pyramid_celery's form)."""
    out: dict[str, str] = {}
    for pair in (text or "").split(","):
        if not pair.strip():
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ImproperlyConfigured(f"--ini-var: {pair!r} is not key=value")
        out[key.strip()] = value
    return out


def _defaults(path: str, variables: Mapping[str, str]) -> dict[str, str]:
    return {"here": os.path.dirname(path), "__file__": path, **variables}


def read(path: str, variables: Mapping[str, str] | None = None) -> IniFile:
    """Read the celeriac settings of the ini file at ``path``."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ImproperlyConfigured(f"--ini {path}: no such file")
    variables = dict(variables or {})
    parser = configparser.ConfigParser(defaults=_defaults(path, variables))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep CELERY_IMPORTS
    own = configparser.ConfigParser(interpolation=None, default_section="\0")
    own.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read(path, encoding="utf-8")
        own.read(path, encoding="utf-8")
    except configparser.Error as exc:
        raise ImproperlyConfigured(f"{path}: {exc}") from None
    ini = IniFile(path, has_logging=parser.has_section("loggers"), variables=variables)

    def get(section: str, key: str) -> str:
        try:
            return parser.get(section, key)
        except configparser.Error as exc:
            raise ImproperlyConfigured(f"{path} [{section}] {key}: {exc}") from None

    if parser.has_section("celery"):
        for key in own.options("celery"):
            ini.settings[key] = convert(key, get("celery", key), f"{path} [celery] {key}")
    schedule: dict[str, Any] = {}
    routes: dict[str, Any] = {}
    for section in parser.sections():
        kind, _, name = section.partition(":")
        if not name:
            continue
        values = {key: get(section, key) for key in own.options(section)}
        where = f"{path} [{section}]"
        if kind == "celerybeat":
            schedule[name] = beat_entry(values, where)
        elif kind == "celeryroute":
            routes[name] = route(values, where)
        elif kind == "celery":
            ini.settings[name] = {k: _json_or_text(v) for k, v in values.items()}
    if schedule:
        ini.settings["beat_schedule"] = {**_mapping(ini.settings, "beat_schedule"), **schedule}
    if routes:
        ini.settings["task_routes"] = {**_mapping(ini.settings, "task_routes"), **routes}
    return ini


def _mapping(settings: dict[str, Any], name: str) -> dict[str, Any]:
    """The dict already given for ``name`` (new or old spelling), removed from settings."""
    found: dict[str, Any] = {}
    for key in [k for k in settings if k == name or OLD_NAMES.get(k) == name]:
        value = settings.pop(key)
        if isinstance(value, dict):
            found.update(value)
    return found


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _bool(value: str, where: str) -> bool:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ImproperlyConfigured(f"{where} = {value!r}: expected true or false")


def _number(value: str, where: str, kind: type = float) -> Any:
    text = value.strip()
    try:
        return int(text) if kind is int or text.lstrip("-").isdigit() else float(text)
    except ValueError:
        raise ImproperlyConfigured(f"{where} = {value!r}: expected a number") from None


def convert(key: str, value: str, where: str) -> Any:
    """The ini text ``value`` of setting ``key`` as the setting's type."""
    name = OLD_NAMES.get(key, key)
    default = DEFAULTS.get(name)
    if name in _BOOLEANS or isinstance(default, bool):
        return _bool(value, where)
    if name in _NUMBERS or isinstance(default, (int, float, timedelta)):
        if not value.strip() and default is None:
            return None
        return _number(value, where, int if type(default) is int else float)
    if isinstance(default, (list, tuple)):
        text = value.strip()
        if text.startswith("["):
            parsed = _json(text, where)
            if not isinstance(parsed, list):
                raise ImproperlyConfigured(f"{where}: expected a list")
            return parsed
        return [item for item in text.replace(",", " ").split() if item]
    if isinstance(default, dict) or name in ("task_routes", "beat_schedule"):
        parsed = _json(value, where)
        if not isinstance(parsed, (dict, list)):
            raise ImproperlyConfigured(f"{where}: expected a JSON object")
        return parsed
    if default is None and name in DEFAULTS:
        parsed = _json_or_text(value)
        return parsed if parsed is not None else None
    return value


def _json(value: str, where: str) -> Any:
    try:
        return json.loads(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{where} = {value!r} is not valid JSON: {exc}") from None


def beat_entry(values: Mapping[str, str], where: str) -> dict[str, Any]:
    """One ``[celerybeat:NAME]`` section as a ``beat_schedule`` entry."""
    unknown = sorted(set(values) - _BEAT_KEYS)
    if unknown:
        raise ImproperlyConfigured(f"{where} {unknown[0]}: unknown key (expected one of "
                                   f"{', '.join(sorted(_BEAT_KEYS))})")
    for required in ("task", "type", "schedule"):
        if not values.get(required, "").strip():
            raise ImproperlyConfigured(f"{where} {required}: missing")
    kind = values["type"].strip()
    raw = _json(values["schedule"], f"{where} schedule")
    entry: dict[str, Any] = {"task": values["task"].strip()}
    try:
        if kind == "timedelta":
            if not isinstance(raw, dict):
                raise TypeError("expected a JSON object such as {\"hours\": 1}")
            entry["schedule"] = timedelta(**raw)
        elif kind == "crontab":
            if not isinstance(raw, dict):
                raise TypeError("expected a JSON object such as {\"minute\": 0}")
            fields: dict[str, Any] = dict(raw)
            entry["schedule"] = crontab(**fields)
        elif kind == "integer":
            if isinstance(raw, bool) or not isinstance(raw, (int, float)):
                raise TypeError("expected a number of seconds")
            entry["schedule"] = raw
        else:
            raise ImproperlyConfigured(f"{where} type = {kind!r}: expected timedelta, crontab "
                                       f"or integer")
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"{where} schedule = {values['schedule']!r}: {exc}") from None
    for key, kind_ in (("args", list), ("kwargs", dict), ("options", dict)):
        if key in values:
            parsed = _json(values[key], f"{where} {key}")
            if not isinstance(parsed, kind_):
                raise ImproperlyConfigured(f"{where} {key}: expected a JSON "
                                           f"{'list' if kind_ is list else 'object'}")
            entry[key] = parsed
    return entry


def route(values: Mapping[str, str], where: str) -> dict[str, Any]:
    """One ``[celeryroute:TASK]`` section as a ``task_routes`` entry."""
    unknown = sorted(set(values) - _ROUTE_KEYS)
    if unknown:
        raise ImproperlyConfigured(f"{where} {unknown[0]}: unknown key (expected one of "
                                   f"{', '.join(sorted(_ROUTE_KEYS))})")
    out: dict[str, Any] = {k: v.strip() for k, v in values.items()}
    if "priority" in out:
        out["priority"] = _number(out["priority"], f"{where} priority", int)
    return out


def apply_logging(ini: IniFile) -> None:
    """Apply the file's ``[loggers]``/``[handlers]``/``[formatters]`` sections."""
    if not ini.has_logging:
        return
    try:
        logging.config.fileConfig(ini.path, defaults=_defaults(ini.path, ini.variables),
                                  disable_existing_loggers=False)
    except (KeyError, ValueError, configparser.Error, OSError) as exc:
        raise ImproperlyConfigured(f"{ini.path}: logging sections: {exc}") from None
