"""``app.conf`` and reading settings from objects: Celery's names, namespaces, old names.

``Settings`` is the mapping behind ``app.conf``: attribute and item access,
``update``, and the defaults of :mod:`.defaults`. :func:`from_mapping` reads
the ``CELERY_*`` upper-case form Django projects use (and Celery's pre-4.0
names, as the Kuma seed still does).

Reported (a ``UserWarning``, once per setting and app, however many times it is
set): an unknown name in a namespace (``CELERY_TASK_ACKS_LAT``), a lowercase name
close to a known one (``task_acks_lat``: "did you mean 'task_acks_late'?";
other lowercase names are the project's own settings, kept as Celery keeps
them), and a Celery setting celeriac accepts without effect when it is set to
anything but its default (:mod:`.accepted`).
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from .accepted import ACCEPTED_ONLY
from .defaults import DEFAULTS
from .old_names import OLD_NAMES


class Settings(dict):
    """``app.conf``: a dict of settings with attribute access and Celery's defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "reported", set())
        object.__setattr__(self, "defaulted", set())  # keys whose value add_defaults gave
        super().__init__({k: _copy(v) for k, v in DEFAULTS.items()})
        self.update(*args, **kwargs)
        self.changes: dict[str, Any] = {}

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"no setting {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        if key in ("changes", "reported"):
            object.__setattr__(self, key, value)
        else:
            self[key] = value

    def __delattr__(self, key: str) -> None:
        try:
            del self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __missing__(self, key: str) -> Any:
        if key in OLD_NAMES:  # ``app.conf.CELERY_ALWAYS_EAGER`` reads the new setting
            return self[OLD_NAMES[key]]
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        key = OLD_NAMES.get(key, key)  # ``conf.update(CELERY_ALWAYS_EAGER=True)``, as Celery
        if key in ("imports", "include") and isinstance(value, str):
            value = tuple(value.replace(",", " ").split())  # an INI-style list of modules
        self._check(key, value)
        super().__setitem__(key, value)
        self.__dict__["defaulted"].discard(key)
        changes = self.__dict__.get("changes")
        if changes is not None:
            changes[key] = value

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def add_defaults(self, mapping: Mapping[str, Any]) -> None:
        """Celery's ``app.add_defaults``: each value replaces the built-in default (and an
        earlier ``add_defaults``'s), never a value the project set."""
        defaulted: set[str] = self.__dict__["defaulted"]
        for key, value in mapping.items():
            key = OLD_NAMES.get(key, key)
            if key not in self.changes or key in defaulted:
                self[key] = value
                defaulted.add(key)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self or self[key] is None:
            self[key] = default
        return self[key]

    def report(self, key: str, message: str) -> None:
        """Warn about ``key`` once for this app, however often it is set or read."""
        reported: set[str] = self.__dict__["reported"]
        if key not in reported:
            reported.add(key)
            warnings.warn(message, UserWarning, stacklevel=4)

    def _check(self, key: str, value: Any) -> None:
        if key in ACCEPTED_ONLY:
            if not _same(value, ACCEPTED_ONLY[key]):
                self.report(key, f"Setting {key!r} is accepted for compatibility with Celery "
                                 "and has no effect in celeriac (see the list in "
                                 "docs/configuration.md)")
        elif key not in DEFAULTS and key.islower() and not key.startswith("_"):
            close = suggestion(key)
            if close:
                self.report(key, f"Unknown celeriac setting {key!r}: it is ignored "
                                 f"(did you mean {close!r}?)")

    def humanize(self) -> str:
        return "\n".join(f"{k}: {self[k]!r}" for k in sorted(self.changes))


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value


#: ``Celery(...)`` arguments of Celery's that celeriac has no counterpart for
CONSTRUCTOR_ONLY = ("loader", "amqp", "events", "log", "control", "tasks", "strict_typing")


def constructor_settings(conf: Settings, kwargs: Mapping[str, Any]) -> None:
    """``Celery(**kwargs)`` as Celery reads it: ``changes=`` and every other keyword are
    settings (a typo is reported); Celery's component arguments (``loader=``,
    ``amqp=``...) are reported as accepted without effect."""
    for key, value in kwargs.items():
        if key == "changes":
            conf.update(value or {})
        elif key in CONSTRUCTOR_ONLY:
            if value is not None:
                conf.report(f"Celery({key}=)", f"Celery({key}=...) is accepted for "
                            "compatibility with Celery and has no effect in celeriac")
        else:
            conf[key] = value


def _same(value: Any, default: Any) -> bool:
    try:
        return bool(value == default)
    except Exception:
        return False


def suggestion(name: str) -> str | None:
    """The known lowercase setting ``name`` is most likely a typo of, if any."""
    found = difflib.get_close_matches(name, list(DEFAULTS), n=1, cutoff=0.85)
    return found[0] if found else None


def from_mapping(source: Mapping[str, Any] | Any, namespace: str | None,
                 settings: Settings | None = None) -> dict[str, Any]:
    """Read settings from a mapping or object, honouring ``namespace`` (e.g. ``CELERY``).

    With a namespace only ``<NAMESPACE>_<UPPER_NAME>`` keys (and Celery's old
    ``CELERY*`` names) are read; an unknown ``<NAMESPACE>_*`` key is reported.
    Without one, lowercase names and old upper-case names are read, and an
    unknown upper-case ``CELERY*``/``BROKER_*`` key is reported (through
    ``settings``, once per app, when given).
    """
    out: dict[str, Any] = {}
    prefix = f"{namespace.upper()}_" if namespace else ""
    for key in _keys(source):
        name = _setting_name(key, prefix)
        if name is not None:
            out[name] = _value(source, key)
        elif _looks_like_setting(key, prefix):
            _report_unknown(key, prefix, settings)
        elif not prefix and key.islower() and not key.startswith("_"):
            value = _value(source, key)
            if _is_data(value):
                out[key] = value  # user-defined lowercase settings are kept, as in Celery
    return out


def _setting_name(key: str, prefix: str) -> str | None:
    """The lowercase setting ``key`` stands for, or None if it names no known setting."""
    if not prefix and key in DEFAULTS:
        return key
    if key in OLD_NAMES and (not prefix or key.startswith(prefix) or key.startswith("CELERY")):
        return OLD_NAMES[key]
    if prefix and key.startswith(prefix) and key[len(prefix):].lower() in DEFAULTS:
        return key[len(prefix):].lower()
    return None


def _looks_like_setting(key: str, prefix: str) -> bool:
    if prefix:
        return key.startswith(prefix)
    return key.isupper() and key.startswith(("CELERY", "BROKER_"))


def _is_data(value: Any) -> bool:
    import inspect

    return not (inspect.ismodule(value) or inspect.isclass(value) or inspect.isroutine(value))


def _keys(source: Mapping[str, Any] | Any) -> Iterable[str]:
    keys = source.keys() if isinstance(source, Mapping) else dir(source)
    return [k for k in keys if isinstance(k, str) and not k.startswith("__")]


def _value(source: Mapping[str, Any] | Any, key: str) -> Any:
    """Read one key; only keys that may be settings are read (a Django settings
    object evaluates attributes lazily)."""
    return source[key] if isinstance(source, Mapping) else getattr(source, key)


def _report_unknown(key: str, prefix: str, settings: Settings | None) -> None:
    close = suggestion(key[len(prefix):].lower()) if prefix and key.startswith(prefix) else None
    hint = f"did you mean {prefix + close.upper()!r}?" if close else "check the spelling"
    message = f"Unknown celeriac setting {key!r}: it is ignored ({hint})"
    if settings is not None:
        settings.report(key, message)
    else:
        warnings.warn(message, UserWarning, stacklevel=4)


def seconds(value: Any) -> float | None:
    """Turn a number or timedelta setting into seconds."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)
