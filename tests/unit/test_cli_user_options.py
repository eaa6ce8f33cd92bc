"""The command line takes the app's ``user_options['preload']`` and ``-A`` after the command."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from celeriac import signals
from celeriac.cli.main import cli
from celeriac.cli.preload import split_app_option

APP = """
import click
from celeriac import Celery

app = Celery("{name}", broker="memory://")
app.user_options["preload"].add(click.Option(("-i", "--ini"), default=None))
app.user_options["preload"].add(click.Option(("--ini-var",), default=None))
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[Any]]]:
    name = f"userapp_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(APP.format(name=name)))
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[Any] = []

    def receiver(sender: Any = None, app: Any = None, options: Any = None, **kw: Any) -> None:
        if app is not None and app.main == name:
            seen.append(dict(options))
            if options.get("ini") == "broken.ini":
                raise ValueError("broken.ini [celery] CELERYD_CONCURRENCY: expected a number")

    signals.user_preload_options.connect(receiver)
    try:
        yield name, seen
    finally:
        signals.user_preload_options.disconnect(receiver)
        sys.modules.pop(name, None)


def test_split_app_option_forms() -> None:
    assert split_app_option(["-A", "p", "-l", "INFO"]) == ("p", ["-l", "INFO"])
    assert split_app_option(["--app=p.celery_app", "x"]) == ("p.celery_app", ["x"])
    assert split_app_option(["-Ap", "--", "-A", "q"]) == ("p", ["--", "-A", "q"])
    assert split_app_option(["--ini", "a.ini"]) == (None, ["--ini", "a.ini"])


@pytest.mark.parametrize("where", ["before", "after"])
def test_preload_options_reach_the_signal(project: tuple[str, list[Any]], where: str) -> None:
    name, seen = project
    args = (["-A", f"{name}:app", "purge", "-f"] if where == "before"
            else ["purge", "-A", f"{name}.app", "-f"])
    result = CliRunner().invoke(cli, [*args, "--ini", "development.ini", "--ini-var", "a=1"])
    assert result.exit_code == 0, result.output
    assert seen == [{"ini": "development.ini", "ini_var": "a=1"}]
    assert "Purged 0 messages" in result.output


def test_a_failing_receiver_stops_the_command(project: tuple[str, list[Any]]) -> None:
    name, seen = project
    result = CliRunner().invoke(cli, ["-A", name, "purge", "-f", "-i", "broken.ini"])
    assert seen == [{"ini": "broken.ini", "ini_var": None}]
    assert result.exit_code == 1
    assert "CELERYD_CONCURRENCY: expected a number" in result.output
    assert "Purged" not in result.output


def test_options_unknown_without_the_app(project: tuple[str, list[Any]]) -> None:
    result = CliRunner().invoke(cli, ["purge", "-f", "--ini", "x.ini"])
    assert result.exit_code == 2 and "No such option '--ini'" in result.output


def test_a_given_twice_differently(project: tuple[str, list[Any]]) -> None:
    name, _seen = project
    result = CliRunner().invoke(cli, ["-A", name, "purge", "-A", "other", "-f"])
    assert result.exit_code == 2 and "-A given twice" in result.output


def test_worker_user_options_are_refused(project: tuple[str, list[Any]]) -> None:
    import click

    name, _seen = project
    module = __import__(name)
    module.app.user_options["worker"].add(click.Option(("--bootstep-flag",), is_flag=True))
    result = CliRunner().invoke(cli, ["-A", name, "worker", "--bootstep-flag"])
    assert result.exit_code == 2
    assert "bootstep_flag" in result.output and "bootsteps" in result.output
