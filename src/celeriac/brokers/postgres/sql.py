"""The SQL text of the PostgreSQL broker and stores: named statements and migrations.

``queries.sql`` holds every statement under a ``-- name: <name>`` line (the file's
header names and describes each one); ``migrations/NNNN_<name>.sql`` are the schema
versions. ``{schema}`` in either is replaced by the validated schema name, so the
SQL never depends on the caller's ``search_path`` (transactional enqueue runs on
the application's own connection).
"""

from __future__ import annotations

import functools
import hashlib
import re
from importlib import resources

from ...exceptions import ImproperlyConfigured

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_schema(name: str) -> str:
    """A schema name celeriac can embed unquoted: lower-case letters, digits, ``_``."""
    if not _SCHEMA.match(name):
        raise ImproperlyConfigured(
            f"postgres schema {name!r}: use lower-case letters, digits and '_' "
            "(at most 63, not starting with a digit)")
    return name


@functools.cache
def _raw_statements() -> dict[str, str]:
    text = resources.files(__package__).joinpath("queries.sql").read_text("utf-8")
    parts = _NAME.split(text)
    named: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        named[name] = body.strip().rstrip(";")
    return named


@functools.lru_cache(maxsize=64)
def statements(schema: str) -> dict[str, str]:
    """Every named statement with ``{schema}`` filled in."""
    check_schema(schema)
    return {name: body.replace("{schema}", schema) for name, body in _raw_statements().items()}


def migrations() -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of every migration, in order."""
    folder = resources.files(__package__).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = re.match(r"^(\d{4})_(\w+)\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    return sorted(found)


def latest_version() -> int:
    return migrations()[-1][0]


def channel(schema: str, kind: str, name: str) -> str:
    """The LISTEN/NOTIFY channel of a queue (``kind="q"``) or result key (``"r"``);
    the same as the SQL function ``<schema>.channel(kind, name)``."""
    digest = hashlib.md5(f"{schema}\x1f{kind}\x1f{name}".encode(), usedforsecurity=False)
    return "celeriac_" + digest.hexdigest()[:24]
