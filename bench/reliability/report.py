"""The reliability suite's output: a terminal table and a dated markdown section.

:func:`table` prints one line per scenario and system with lost / duplicated /
dead-lettered / time to recover. :func:`markdown` renders the same figures
as a markdown section headed with the date, the commit, the command and the
machine; :func:`write_section` puts it into ``docs/reliability.md`` between two
marker comments (one section per broker, replaced on the next run of that
broker, other brokers' sections kept).
"""

from __future__ import annotations

import fcntl
import os
import platform
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from counting import Figures

COLUMNS = ("scenario", "system", "accepted", "lost", "duplicated", "dead-lettered",
           "recover (s)", "ok")


def _dup(figures: Figures) -> str:
    if not figures.duplicated:
        return "0"
    why = ", ".join(f"{n} {k}" for k, n in sorted(figures.explained.items()))
    return f"{figures.duplicated} ({why})"


def _cells(figures: Figures) -> list[str]:
    if figures.notes and figures.notes[0].startswith("n/a"):
        return [figures.scenario, figures.system, "n/a", "", "", "", "", ""]
    return [figures.scenario, figures.system, f"{figures.accepted:,}", str(figures.lost),
            _dup(figures), "-" if figures.dead_lettered is None else str(figures.dead_lettered),
            "-" if figures.recover_s is None else f"{figures.recover_s:.1f}",
            "yes" if figures.ok else "NO"]


def table(results: Sequence[Figures]) -> str:
    """A plain-text table with the notes under each row."""
    rows = [list(COLUMNS)] + [_cells(f) for f in results]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if index:
            lines += [f"    {note}" for note in results[index - 1].notes]
    return "\n".join(lines)


def commit() -> str:
    """``<short sha>`` of HEAD (``+dirty`` when the tree has changes), or ``unknown``."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":!docs/reliability.md"],  # the file the runs write
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def machine() -> str:
    """CPU count, memory, OS, Python and the load average: enough to compare runs."""
    try:
        with open("/proc/meminfo") as fh:
            mem = int(fh.readline().split()[1]) / 1024 / 1024
        memory = f", {mem:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        memory = ""
    load = f", load average {os.getloadavg()[0]:.1f} at the end"
    return (f"{os.cpu_count()} CPUs{memory}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}{load}")


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(broker: str, results: Sequence[Figures], command: str,
             versions: dict[str, str], when: datetime | None = None,
             sha: str | None = None) -> str:
    """The section for one broker (see the module docstring)."""
    when = when or datetime.now(timezone.utc)
    head = [f"### {broker}", "",
            f"Run {when:%Y-%m-%d %H:%M} UTC at commit `{sha or commit()}`: `{command}`  ",
            f"Machine: {machine()}  ",
            "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), "",
            "| " + " | ".join(COLUMNS) + " | notes |",
            "|" + "---|" * (len(COLUMNS) + 1)]
    for figures in results:
        notes = "; ".join(_md_escape(n) for n in figures.notes)
        head.append("| " + " | ".join(_md_escape(c) for c in _cells(figures))
                    + f" | {notes} |")
    return "\n".join(head) + "\n"


def _markers(broker: str) -> tuple[str, str]:
    return f"<!-- reliability:{broker}:begin -->", f"<!-- reliability:{broker}:end -->"


def write_section(path: Path, broker: str, section: str) -> None:
    """Replace (or append) ``broker``'s section of ``path`` between its markers
    (under an exclusive lock on the file: runs of several brokers may finish at once)."""
    begin, end = _markers(broker)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        text = fh.read()
        block = f"{begin}\n{section}{end}"
        if begin in text and end in text:
            before, rest = text.split(begin, 1)
            after = rest.split(end, 1)[1]
            text = before + block + after
        else:
            text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
        fh.seek(0)
        fh.truncate()
        fh.write(text)
