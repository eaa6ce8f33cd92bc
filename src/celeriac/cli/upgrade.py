"""``celeriac upgrade settings FILE``: rewrite Celery's pre-4.0 setting names to the new ones.

As Celery's command: ``CELERY_ALWAYS_EAGER = True`` becomes
``task_always_eager = True`` (with ``--django`` or ``--compat``:
``CELERY_TASK_ALWAYS_EAGER``, the name a Django settings module with the
``CELERY`` namespace uses); the original is kept as ``FILE.orig`` unless
``--no-backup``. The names come from :data:`celeriac.config.old_names.OLD_NAMES`
(every old name Celery knows). Unlike Celery, which replaces the first old name
found anywhere in a line (also inside a longer name), only whole names are
replaced (also in strings and after a dot, as Celery's: ``app.conf.BROKER_URL``),
every one of them on the line.
"""

from __future__ import annotations

import re
import shutil

import click

from ..config.old_names import OLD_NAMES

#: an identifier-shaped word: only whole names are rewritten
WORD = re.compile(r"(?<!\w)[A-Z][A-Z0-9_]*(?!\w)")


def compat_name(new: str, namespace: str = "CELERY") -> str:
    """``task_always_eager`` -> ``CELERY_TASK_ALWAYS_EAGER`` (Django's namespaced names)."""
    upper = new.upper()
    return upper if upper.startswith(namespace) else f"{namespace}_{upper}"


def upgrade_line(line: str, compat: bool = False) -> str:
    def replace(match: re.Match[str]) -> str:
        new = OLD_NAMES.get(match.group(0))
        if new is None:
            return match.group(0)
        return compat_name(new) if compat else new

    return WORD.sub(replace, line)


@click.group("upgrade")
def upgrade_group() -> None:
    """Upgrade a project between Celery versions."""


@upgrade_group.command("settings")
@click.argument("filename", type=click.Path(exists=True, dir_okay=False))
@click.option("--django", is_flag=True, help="A Django settings module: CELERY_-prefixed "
                                             "upper-case names.")
@click.option("--compat", is_flag=True, help="Keep upper-case CELERY_-prefixed names.")
@click.option("--no-backup", is_flag=True, help="Do not keep the original as FILENAME.orig.")
def settings(filename: str, django: bool, compat: bool, no_backup: bool) -> None:
    """Rewrite the old (Celery 3) setting names in FILENAME to the new ones."""
    click.echo(f"processing {filename}...", err=True)
    with open(filename, encoding="utf-8", newline="") as fh:
        lines = fh.readlines()
    new_lines = [upgrade_line(line, compat=django or compat) for line in lines]
    changed = sum(a != b for a, b in zip(lines, new_lines, strict=True))
    if not changed:
        click.echo("Does not seem to require any changes :-)")
        return
    if not no_backup:
        click.echo(f"writing backup to {filename}.orig...", err=True)
        shutil.copyfile(filename, f"{filename}.orig")
    with open(filename, "w", encoding="utf-8", newline="") as fh:
        fh.writelines(new_lines)
    click.echo(f"Changes to your setting have been made! ({changed} line"
               f"{'s' if changed != 1 else ''})")
