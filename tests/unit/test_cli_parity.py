"""Every option and command of Celery's ``celery`` command (the installed 5.7) exists in
``celeriac`` with the same spelling, so a command line written for Celery parses.

What each one does in celeriac is tested by the acceptance tests that run it
(tests/acceptance/test_cli_*.py); this test catches a Celery flag nobody mapped.
"""

from __future__ import annotations

import click
import pytest

celery_bin = pytest.importorskip("celery.bin.celery")

from celeriac.cli.main import cli  # noqa: E402


def _option_strings(command: click.Command) -> set[str]:
    return {opt for param in command.params if isinstance(param, click.Option)
            for opt in (*param.opts, *param.secondary_opts)}


def _pairs(theirs: click.Command, ours: click.Command, path: str = ""
           ) -> list[tuple[str, click.Command, click.Command | None]]:
    found: list[tuple[str, click.Command, click.Command | None]] = [(path, theirs, ours)]
    if isinstance(theirs, click.Group):
        for name, sub in theirs.commands.items():
            mine = ours.commands.get(name) if isinstance(ours, click.Group) else None
            if mine is None:
                found.append((f"{path} {name}".strip(), sub, None))
            else:
                found.extend(_pairs(sub, mine, f"{path} {name}".strip()))
    return found


PAIRS = _pairs(celery_bin.celery, cli)
#: Celery's ``events`` gives ``-d`` to both ``--dump`` and ``--detach`` (click lets the later,
#: ``--detach``, win); celeriac keeps ``-d`` for ``--dump``, as Celery's documentation has it
SHARED_SHORT = {("events", frozenset({"-d", "--detach"}))}


@pytest.mark.parametrize(("path", "theirs", "ours"), PAIRS, ids=[p[0] or "celery" for p in PAIRS])
def test_celery_command_and_options_exist(path: str, theirs: click.Command,
                                          ours: click.Command | None) -> None:
    assert ours is not None, f"celeriac has no command {path!r}"
    missing = sorted(_option_strings(theirs) - _option_strings(ours))
    assert not missing, f"celeriac {path}: missing {missing}"
    # each Celery option's spellings name one and the same celeriac option
    mine = [set(p.opts) | set(p.secondary_opts) for p in ours.params
            if isinstance(p, click.Option)]
    for param in theirs.params:
        if isinstance(param, click.Option):
            spellings = set(param.opts) | set(param.secondary_opts)
            if (path, frozenset(spellings)) in SHARED_SHORT:
                continue
            assert any(spellings <= own for own in mine), \
                f"celeriac {path}: {sorted(spellings)} are not one option"


def test_every_celery_inspect_and_control_command_can_be_sent() -> None:
    from celery.worker.control import Panel

    from celeriac.cli.control import CONTROL, INSPECT

    theirs = {kind: {name for name, meta in Panel.meta.items() if meta.type == kind}
              for kind in ("inspect", "control")}
    assert theirs["inspect"] - set(INSPECT) == set()
    assert theirs["control"] - set(CONTROL) == set()
