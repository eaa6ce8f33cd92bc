"""Settings that would do nothing are reported (issue 9, point 5): lowercase typos with a
"did you mean", once; settings accepted without effect, once, by name; Celery's
constructor arguments; ``autofinalize``; where the broker URL comes from."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from celeriac import Celery
from needs import need

ENV = ("CELERY_BROKER_URL", "CELERIAC_BROKER_URL", "CELERY_RESULT_BACKEND",
       "CELERIAC_RESULT_BACKEND", "CELERIAC_SQLITE_PATH")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def make_app(**kwargs: object) -> Celery:
    return Celery("reporting", broker="memory://", set_as_current=False, **kwargs)


def messages(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught]


def test_a_lowercase_typo_is_reported_once_with_a_suggestion() -> None:
    app = make_app()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app.conf.update(task_acks_lat=True)
        app.conf.update(task_acks_lat=True)
        app.conf.task_acks_lat = False
    assert messages(caught) == ["Unknown celeriac setting 'task_acks_lat': it is ignored "
                                "(did you mean 'task_acks_late'?)"]


def test_a_typo_in_a_config_module_and_in_the_constructor() -> None:
    class Config:
        worker_prefetch_multiplyer = 4
        my_project_setting = "kept"   # a project's own setting: kept, not reported

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app = make_app(task_serialiser="json")
        app.config_from_object(Config)
    assert messages(caught) == [
        "Unknown celeriac setting 'task_serialiser': it is ignored (did you mean "
        "'task_serializer'?)",
        "Unknown celeriac setting 'worker_prefetch_multiplyer': it is ignored (did you mean "
        "'worker_prefetch_multiplier'?)"]
    assert app.conf.my_project_setting == "kept"


def test_a_namespaced_typo_gets_a_suggestion_in_its_own_spelling() -> None:
    app = make_app()
    with pytest.warns(UserWarning, match="did you mean 'CELERY_TASK_ACKS_LATE'"):
        app.config_from_object({"CELERY_TASK_ACKS_LAT": True}, namespace="CELERY")


def test_a_setting_accepted_without_effect_warns_once_naming_it() -> None:
    app = make_app()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app.conf.worker_log_color = False
        app.conf.update(worker_log_color=True)
        app.conf.result_serializer = "json"  # its default: nothing to report
    assert messages(caught) == ["Setting 'worker_log_color' is accepted for compatibility "
                                "with Celery and has no effect in celeriac (see the list in "
                                "docs/configuration.md)"]


def test_celery_component_arguments_are_reported_and_changes_applied() -> None:
    with pytest.warns(UserWarning, match=r"Celery\(loader=\.\.\.\) is accepted"):
        app = make_app(loader="celery.loaders.app:AppLoader",
                       changes={"task_default_queue": "from-changes"})
    assert app.conf.task_default_queue == "from-changes"


def test_autofinalize_false_refuses_to_finalize_implicitly() -> None:
    app = make_app(autofinalize=False)

    @app.task(name="t.defined")
    def defined() -> None: ...

    with pytest.raises(RuntimeError, match="app not finalized"):
        app.tasks  # noqa: B018 - the access is the test
    app.finalize()
    assert "t.defined" in app.tasks


def test_the_environment_beats_an_explicit_broker_as_in_celery(clean_env: pytest.MonkeyPatch
                                                               ) -> None:
    """Checked against Celery 5.7: ``CELERY_BROKER_URL`` wins over ``Celery(broker=)``
    (``celery.app.utils.Settings.broker_url`` reads the environment first)."""
    celery = need("celery")
    clean_env.setenv("CELERY_BROKER_URL", "redis://from-env:6379/0")
    theirs = celery.Celery("theirs", broker="redis://explicit:6379/0", set_as_current=False)
    ours = Celery("ours", broker="redis://explicit:6379/0", set_as_current=False)
    assert theirs.conf.broker_url == ours.broker_url == "redis://from-env:6379/0"


def test_dash_b_beats_the_environment(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``celery -b`` sets ``CELERY_BROKER_URL`` itself, so it beats the environment and
    the app's ``broker=``; ``celeriac -b`` does the same."""
    (tmp_path / "proj.py").write_text(textwrap.dedent('''
        from celeriac import Celery
        app = Celery("proj", broker="memory://")
    '''))
    env = {"PATH": "/usr/bin:/bin", "CELERY_BROKER_URL": f"sqlite:///{tmp_path}/env.db"}
    done = subprocess.run([sys.executable, "-m", "celeriac", "-A", "proj", "-b",
                           f"sqlite:///{tmp_path}/dash-b.db", "purge", "-f"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "dash-b.db").exists() and not (tmp_path / "env.db").exists()


def test_add_defaults_replaces_defaults_never_project_settings() -> None:
    """Checked against Celery 5.7: ``app.add_defaults`` wins over the built-in defaults
    (it was ignored for every setting with a default) and over an earlier add_defaults,
    never over a value the project set, before or after."""
    celery = need("celery")
    outcomes = []
    for make in (lambda: celery.Celery("theirs", broker="memory://", set_as_current=False),
                 make_app):
        app = make()
        app.conf.task_default_queue = "mine"
        app.add_defaults({"task_default_queue": "dq", "result_expires": 5, "own": 1})
        app.add_defaults(lambda: {"result_expires": 6, "task_default_priority": 3})
        app.conf.task_default_priority = 4
        app.add_defaults({"task_default_priority": 5})
        outcomes.append([app.conf.task_default_queue, app.conf.result_expires, app.conf.own,
                         app.conf.task_default_priority])
    assert outcomes[0] == outcomes[1] == ["mine", 6, 1, 4]


@pytest.mark.parametrize("way", ["attribute", "update", "namespace", "constructor",
                                 "add_defaults"])
def test_every_setting_accepted_without_effect_warns_whichever_way_it_is_set(
        way: str) -> None:
    """Each name in ``ACCEPTED_ONLY`` set to anything but its default is reported, by
    name, through every way a project sets settings."""
    from celeriac.config import ACCEPTED_ONLY

    for name in ACCEPTED_ONLY:
        if way == "constructor" and name == "task_cls":
            continue  # Celery(task_cls=) is the base task class, as in Celery
        value = f"changed-{name}"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            app = make_app(**({name: value} if way == "constructor" else {}))
            if way == "attribute":
                setattr(app.conf, name, value)
            elif way == "update":
                app.conf.update({name: value})
            elif way == "namespace":
                app.config_from_object({f"CELERY_{name.upper()}": value}, namespace="CELERY")
            elif way == "add_defaults":
                app.add_defaults({name: value})
        assert messages(caught) == [f"Setting {name!r} is accepted for compatibility with "
                                    "Celery and has no effect in celeriac (see the list in "
                                    "docs/configuration.md)"], (name, way)
