"""docs/configuration.md matches the code (issue 9, "done when"): the settings tables list
exactly ``USED``, the accepted-without-effect list exactly ``ACCEPTED_ONLY``, and no code
outside ``celeriac.config`` reads a setting the docs call without effect."""

from __future__ import annotations

import re
from pathlib import Path

from celeriac.config import ACCEPTED_ONLY, USED

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "configuration.md").read_text()


def section(title: str) -> str:
    start = DOC.index(title)
    end = DOC.find("\n## ", start + 1)
    return DOC[start:end if end > 0 else None]


def tabled() -> set[str]:
    names: set[str] = set()
    for part in ("## Settings celeriac reads", "## Django integration settings"):
        for line in section(part).splitlines():
            if line.startswith("| `"):
                names |= set(re.findall(r"`([a-z][a-z_0-9]*)`", line.split("|")[1]))
    return names


def listed() -> tuple[set[str], set[str]]:
    """Names and ``prefix_*`` patterns of the accepted list (parenthetical notes aside)."""
    text = section("## Celery settings accepted without effect")
    text = text[:text.index("The authoritative lists")]
    text = re.sub(r"\([^()]*\)", "", text)
    return (set(re.findall(r"`([a-z][a-z_0-9]*)`", text)),
            set(re.findall(r"`([a-z][a-z_0-9]*_)\*`", text)))


def test_the_settings_tables_list_exactly_what_celeriac_reads() -> None:
    assert tabled() == set(USED)


def test_the_accepted_list_is_exactly_accepted_only() -> None:
    names, prefixes = listed()
    covered = {n for n in ACCEPTED_ONLY if n in names or n.startswith(tuple(prefixes))}
    assert covered == set(ACCEPTED_ONLY)
    assert names <= set(ACCEPTED_ONLY)


def test_code_reads_no_setting_documented_as_without_effect() -> None:
    code = "\n".join(p.read_text() for p in (ROOT / "src" / "celeriac").rglob("*.py")
                     if "config" not in p.relative_to(ROOT / "src" / "celeriac").parts[:1])
    read = set(re.findall(r"conf\.([a-z_0-9]+)", code))
    read |= set(re.findall(r"conf(?:\.get)?[\[(]\s*\"([a-z_0-9]+)\"", code))
    assert read & set(ACCEPTED_ONLY) == set()
    assert [name for name in USED if name not in code] == []  # every used one is read
