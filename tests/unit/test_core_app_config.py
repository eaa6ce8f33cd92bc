"""App and configuration: constructor, defaults, config_from_object forms, old names,
namespaces, validation, autodiscovery, current_app, send_task, broker/backend URLs."""

from __future__ import annotations

import os
import sys
import textwrap
import types
import uuid
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import celeriac
from celeriac import Celery, current_app, shared_task
from celeriac import config as config_module
from celeriac.app.request import parse_request
from celeriac.exceptions import ImproperlyConfigured, NotRegistered
from celeriac.serialization import accepted_types
from needs import need


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("proj", broker="memory://", backend="memory://")
    yield app
    app.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("CELERY_BROKER_URL", "CELERIAC_BROKER_URL", "CELERY_RESULT_BACKEND",
                 "CELERIAC_RESULT_BACKEND", "CELERIAC_SQLITE_PATH"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# -- constructor and defaults ----------------------------------------------------------
def test_constructor_arguments(clean_env: pytest.MonkeyPatch) -> None:
    app = Celery("proj", broker="redis://127.0.0.1:6379/3", backend="redis://127.0.0.1/4",
                 include=["proj.tasks"], set_as_current=False)
    assert app.main == "proj"
    assert app.conf.broker_url == "redis://127.0.0.1:6379/3"
    assert app.broker_url == "redis://127.0.0.1:6379/3"
    assert app.conf.result_backend == "redis://127.0.0.1/4"
    assert app.backend_url == "redis://127.0.0.1/4"
    assert tuple(app.conf.include) == ("proj.tasks",)


def test_celery_defaults_with_our_deliberate_differences(app: Celery) -> None:
    conf = app.conf
    assert conf.task_serializer == "json"
    assert conf.result_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.result_expires == timedelta(days=1)
    assert conf.enable_utc is True
    assert conf.task_default_queue == "celery"
    assert conf.task_always_eager is False
    assert conf.task_eager_propagates is False
    assert conf.task_default_retry_delay == 180
    assert conf.task_publish_retry is True
    assert conf.task_publish_retry_policy == {"max_retries": 3, "interval_start": 0,
                                              "interval_step": 0.2, "interval_max": 1}
    assert conf.broker_heartbeat == 120
    # deliberate differences (docs/differences): at-least-once, no hoarding
    assert conf.task_acks_late is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf["task_routes"] is None
    with pytest.raises(AttributeError):
        _ = conf.no_such_setting


def test_defaults_are_not_shared_between_apps() -> None:
    a = Celery("a", broker="memory://", set_as_current=False)
    b = Celery("b", broker="memory://", set_as_current=False)
    a.conf.accept_content.append("pickle")
    a.conf.beat_schedule["x"] = {}
    assert b.conf.accept_content == ["json"]
    assert b.conf.beat_schedule == {}
    assert config_module.DEFAULTS["accept_content"] == ["json"]


def test_conf_update_and_attribute_access(app: Celery) -> None:
    app.conf.update(task_default_queue="work", worker_concurrency=3)
    app.conf.update({"result_expires": 60})
    app.conf.timezone = "Europe/Paris"
    assert app.conf["task_default_queue"] == "work"
    assert app.conf.worker_concurrency == 3
    assert app.conf.result_expires == 60
    assert app.conf.timezone == "Europe/Paris"
    assert {"task_default_queue", "worker_concurrency", "result_expires",
            "timezone"} <= set(app.conf.changes)


def test_constructor_keyword_settings() -> None:
    app = Celery("kw", broker="memory://", task_default_queue="kwq", set_as_current=False)
    assert app.conf.task_default_queue == "kwq"


# -- config_from_object ------------------------------------------------------------------
class ConfigObject:
    broker_url = "memory://"
    task_default_queue = "objq"
    worker_concurrency = 2
    my_custom_setting = "kept"


def test_config_from_object_with_an_object(app: Celery) -> None:
    app.config_from_object(ConfigObject)
    assert app.conf.task_default_queue == "objq"
    assert app.conf.worker_concurrency == 2
    assert app.conf.my_custom_setting == "kept"


@pytest.fixture
def config_module_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"celeriac_cfg_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        from datetime import timedelta
        import os
        broker_url = "memory://"
        task_default_queue = "modq"
        result_expires = timedelta(hours=2)

        class Nested:
            task_default_queue = "nestedq"
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_config_from_object_with_a_module_path(app: Celery, config_module_name: str) -> None:
    app.config_from_object(config_module_name)
    assert app.conf.task_default_queue == "modq"
    assert app.conf.result_expires == timedelta(hours=2)
    assert "os" not in app.conf and "timedelta" not in app.conf  # imports are not settings
    assert os.sep


def test_config_from_object_module_colon_attr(app: Celery, config_module_name: str) -> None:
    app.config_from_object(f"{config_module_name}:Nested")
    assert app.conf.task_default_queue == "nestedq"
    other = Celery("o", broker="memory://", set_as_current=False)
    other.config_from_object(f"{config_module_name}.Nested")
    assert other.conf.task_default_queue == "nestedq"


def test_config_from_object_missing_module(app: Celery) -> None:
    with pytest.raises(ImportError):
        app.config_from_object("no_such_module_celeriac_xyz")
    app.config_from_object("no_such_module_celeriac_xyz", silent=True)
    assert app.conf.task_default_queue == "celery"


def test_config_from_envvar(app: Celery, config_module_name: str,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERIAC_TEST_CONFIG", config_module_name)
    app.config_from_envvar("CELERIAC_TEST_CONFIG")
    assert app.conf.task_default_queue == "modq"
    monkeypatch.delenv("CELERIAC_TEST_CONFIG")
    with pytest.raises(ImportError):
        app.config_from_envvar("CELERIAC_TEST_CONFIG")


def test_django_style_namespace(app: Celery) -> None:
    settings = types.SimpleNamespace(
        DEBUG=True, INSTALLED_APPS=["x"], CELERY_BROKER_URL="memory://",
        CELERY_TASK_ALWAYS_EAGER=True, CELERY_RESULT_BACKEND="memory://",
        CELERY_TASK_ROUTES={"a.*": "q"}, CELERY_WORKER_CONCURRENCY=7, broker_url="ignored://",
    )
    app.config_from_object(settings, namespace="CELERY")
    assert app.conf.broker_url == "memory://"
    assert app.conf.task_always_eager is True
    assert app.conf.result_backend == "memory://"
    assert app.conf.task_routes == {"a.*": "q"}
    assert app.conf.worker_concurrency == 7
    assert "DEBUG" not in app.conf and "INSTALLED_APPS" not in app.conf


def test_unknown_namespaced_setting_is_reported(app: Celery) -> None:
    settings = {"CELERY_TASK_ALWAYS_EAGR": True, "CELERY_TASK_ACKS_LATE": False}
    with pytest.warns(UserWarning, match="CELERY_TASK_ALWAYS_EAGR"):
        app.config_from_object(settings, namespace="CELERY")
    assert app.conf.task_always_eager is False
    assert app.conf.task_acks_late is False


def test_unknown_celery_setting_without_namespace_is_reported(app: Celery) -> None:
    with pytest.warns(UserWarning, match="CELERY_ALWAYS_EAGRE"):
        app.config_from_object({"CELERY_ALWAYS_EAGRE": True})


def test_known_settings_raise_no_warning(app: Celery) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        app.config_from_object({"CELERY_TASK_SERIALIZER": "json",
                                "CELERY_BROKER_URL": "memory://"}, namespace="CELERY")


def test_old_setting_names_kuma_and_websauna(app: Celery) -> None:
    """Kuma: CELERY_ALWAYS_EAGER / CELERYD_CONCURRENCY; Websauna: CELERY_IMPORTS."""
    app.config_from_object({
        "CELERY_ALWAYS_EAGER": True, "CELERYD_CONCURRENCY": 4,
        "CELERY_IMPORTS": ("websauna.system.devop.tasks", "trees.tasks"),
        "BROKER_URL": "memory://", "CELERY_EAGER_PROPAGATES_EXCEPTIONS": True,
        "CELERY_TASK_RESULT_EXPIRES": 30,
    })
    assert app.conf.task_always_eager is True
    assert app.conf.worker_concurrency == 4
    assert app.conf.imports == ("websauna.system.devop.tasks", "trees.tasks")
    assert app.conf.broker_url == "memory://"
    assert app.conf.task_eager_propagates is True
    assert app.conf.result_expires == 30


def test_old_names_also_work_with_the_celery_namespace(app: Celery) -> None:
    app.config_from_object({"CELERY_ALWAYS_EAGER": True, "CELERYD_CONCURRENCY": 3},
                           namespace="CELERY")
    assert app.conf.task_always_eager is True
    assert app.conf.worker_concurrency == 3


def test_config_source_constructor_argument() -> None:
    app = Celery("cs", config_source={"CELERY_TASK_DEFAULT_QUEUE": "csq"},
                 namespace="CELERY", set_as_current=False)
    assert app.conf.task_default_queue == "csq"


# -- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "value"), [
    ("broker_url", 42),
    ("worker_concurrency", 0),
    ("worker_concurrency", "4"),
    ("worker_prefetch_multiplier", -1),
    ("worker_pool", "gevent-ish"),
    ("task_acks_late", "yes"),
    ("task_default_queue", ""),
    ("accept_content", "json"),
    ("result_expires", "1 day"),
    ("task_routes", 12),
    ("timezone", "Mars/Olympus_Mons"),
    ("task_serializer", "yaml-nope"),
])
def test_validate_names_the_wrong_setting(app: Celery, name: str, value: object) -> None:
    app.conf[name] = value
    with pytest.raises(ImproperlyConfigured, match=name):
        config_module.validate(app.conf)


def test_validate_accepts_defaults_and_good_values(app: Celery) -> None:
    config_module.validate(app.conf)
    app.conf.update(worker_concurrency=4, timezone="Europe/Paris", result_expires=60,
                    task_routes=lambda *a, **k: None, accept_content=["json", "pickle"])
    config_module.validate(app.conf)


# -- tasks, discovery, current app ----------------------------------------------------------
@pytest.fixture
def temp_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    with_tasks, without = f"pkg_tasks_{suffix}", f"pkg_plain_{suffix}"
    (tmp_path / with_tasks).mkdir()
    (tmp_path / with_tasks / "__init__.py").write_text("")
    (tmp_path / with_tasks / "tasks.py").write_text(textwrap.dedent("""
        from celeriac import shared_task

        @shared_task
        def discovered(x):
            return x * 2
    """))
    (tmp_path / with_tasks / "jobs.py").write_text(textwrap.dedent("""
        from celeriac import shared_task

        @shared_task(name="custom.job")
        def job():
            return "job"
    """))
    (tmp_path / without).mkdir()
    (tmp_path / without / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield with_tasks, without
    for name in list(sys.modules):
        if name.startswith((with_tasks, without)):
            del sys.modules[name]


def test_autodiscover_tasks(app: Celery, temp_packages: tuple[str, str]) -> None:
    with_tasks, without = temp_packages
    app.autodiscover_tasks([with_tasks, without])
    assert f"{with_tasks}.tasks.discovered" in app.tasks
    assert f"{without}.tasks" not in sys.modules
    assert app.tasks[f"{with_tasks}.tasks.discovered"](21) == 42


def test_autodiscover_related_name_and_lazy_callable(app: Celery,
                                                     temp_packages: tuple[str, str]) -> None:
    with_tasks, _ = temp_packages
    app.autodiscover_tasks(lambda: [with_tasks], related_name="jobs")
    assert "custom.job" in app.tasks
    assert app.tasks["custom.job"]() == "job"


def test_autodiscover_after_finalize_imports_at_once(app: Celery,
                                                     temp_packages: tuple[str, str]) -> None:
    with_tasks, _ = temp_packages
    app.finalize()
    app.autodiscover_tasks([with_tasks])
    assert f"{with_tasks}.tasks" in sys.modules
    assert f"{with_tasks}.tasks.discovered" in app.tasks


def test_include_and_imports_are_imported_on_finalize(temp_packages: tuple[str, str]) -> None:
    with_tasks, _ = temp_packages
    app = Celery("inc", broker="memory://", include=[f"{with_tasks}.tasks"],
                 set_as_current=False)
    assert f"{with_tasks}.tasks.discovered" in app.tasks
    app2 = Celery("imp", broker="memory://", set_as_current=False)
    app2.config_from_object({"CELERY_IMPORTS": (f"{with_tasks}.jobs",)})
    assert "custom.job" in app2.tasks


def test_current_app_follows_the_latest_app() -> None:
    first = Celery("first", broker="memory://")
    assert current_app.main == "first"
    assert celeriac.current_app.conf is first.conf
    Celery("second", broker="memory://")
    assert current_app.main == "second"
    Celery("hidden", broker="memory://", set_as_current=False)
    assert current_app.main == "second"
    first.set_current()
    assert current_app.main == "first"


def test_shared_task_binds_to_every_app() -> None:
    @shared_task
    def shared_double(x: int) -> int:
        return 2 * x

    name = f"{__name__}.shared_double"
    a = Celery("sa", broker="memory://")
    b = Celery("sb", broker="memory://", set_as_current=False)
    assert name in a.tasks and name in b.tasks
    assert a.tasks[name] is not b.tasks[name]
    assert shared_double.name == name
    assert shared_double(4) == 8
    assert shared_double.app is a


def test_unregistered_task_lookup_raises(app: Celery) -> None:
    with pytest.raises(NotRegistered):
        app.tasks["nope.nothing"]


# -- send_task -------------------------------------------------------------------------------
def test_send_task_by_name_without_the_code(app: Celery) -> None:
    result = app.send_task("remote.add", args=[2, 2], kwargs={"z": 1}, queue="math",
                           countdown=0)
    assert result.id and result.task_name == "remote.add"
    [delivery] = app.broker.receive(["math"], owner="t", limit=1, timeout=0)
    call = parse_request(delivery.message, accepted_types(["json"]))
    assert (call.name, call.id, call.args, call.kwargs) == ("remote.add", result.id, [2, 2],
                                                             {"z": 1})
    assert delivery.message.properties["delivery_info"]["routing_key"] == "math"


def test_send_task_uses_task_routes(app: Celery) -> None:
    app.conf.task_routes = {"remote.*": {"queue": "remote"}}
    app.send_task("remote.thing")
    assert app.broker.receive(["remote"], owner="t", limit=1, timeout=0)


# -- broker and result store URLs ------------------------------------------------------------
def test_default_broker_is_embedded_sqlite_in_cwd(clean_env: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    clean_env.chdir(tmp_path)
    app = Celery("d", set_as_current=False)
    expected = "sqlite:///" + str(tmp_path / "celeriac.sqlite3")
    assert app.broker_url == expected
    assert app.backend_url == expected  # results in the same file


def test_sqlite_path_from_environment(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("CELERIAC_SQLITE_PATH", str(tmp_path / "x.db"))
    app = Celery("d", set_as_current=False)
    assert app.broker_url == "sqlite:///" + str(tmp_path / "x.db")
    assert app.backend_url == app.broker_url


def test_celery_broker_url_env_is_honoured(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CELERY_BROKER_URL", "memory://")
    assert Celery("e", set_as_current=False).broker_url == "memory://"
    # as in Celery, the environment wins over the configured value
    assert Celery("e", broker="redis://127.0.0.1/1", set_as_current=False).broker_url == (
        "memory://")
    clean_env.setenv("CELERY_RESULT_BACKEND", "redis://127.0.0.1/2")
    assert Celery("e", set_as_current=False).backend_url == "redis://127.0.0.1/2"


def test_remote_broker_without_backend_disables_results(clean_env: pytest.MonkeyPatch) -> None:
    app = Celery("r", broker="redis://127.0.0.1:6379/0", set_as_current=False)
    assert app.backend_url is None
    assert app.backend is None


def test_memory_broker_shares_url_with_results(app: Celery,
                                               clean_env: pytest.MonkeyPatch) -> None:
    app2 = Celery("m", broker="memory://", set_as_current=False)
    assert app2.backend_url == "memory://"
    assert app2.backend is not None


def test_unsupported_broker_scheme(clean_env: pytest.MonkeyPatch) -> None:
    app = Celery("u", broker="carrier-pigeon://coop", set_as_current=False)
    with pytest.raises(ImproperlyConfigured, match="carrier-pigeon"):
        _ = app.broker


def test_timezone_setting(app: Celery) -> None:
    assert str(app.timezone) == "UTC"
    app.conf.timezone = "Europe/Paris"
    assert str(app.timezone) == "Europe/Paris"
    assert app.now().tzinfo is not None



def test_old_names_set_directly_on_conf(app: Celery) -> None:
    app.conf.update(CELERY_ALWAYS_EAGER=True, CELERYD_CONCURRENCY=2)
    app.conf.CELERY_ACKS_LATE = False
    assert app.conf.task_always_eager is True
    assert app.conf.worker_concurrency == 2
    assert app.conf.task_acks_late is False
    assert app.conf.CELERY_ALWAYS_EAGER is True
    assert app.conf["CELERYD_CONCURRENCY"] == 2
    assert "CELERY_ALWAYS_EAGER" not in app.conf


def test_imports_as_ini_text_websauna(app: Celery) -> None:
    """Websauna's INI: ``CELERY_IMPORTS =`` followed by one module per line."""
    app.config_from_object({"CELERY_IMPORTS": "\n    websauna.system.devop.tasks\n"
                                              "    trees.tasks"})
    assert app.conf.imports == ("websauna.system.devop.tasks", "trees.tasks")


def test_every_celery_setting_name_is_known() -> None:
    """All 207 Celery 5.7 settings are recognised, new and old spellings alike."""
    celery_defaults = need("celery.app.defaults")
    for key in celery_defaults.DEFAULTS:
        if key.islower():
            assert key in config_module.DEFAULTS, key
    for old, new in celery_defaults._TO_NEW_KEY.items():
        assert config_module.OLD_NAMES[old] == new
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        namespaced = {f"CELERY_{k.upper()}": v for k, v in celery_defaults.DEFAULTS.items()
                      if k.islower()}
        config_module.from_mapping(namespaced, "CELERY")


def test_conf_can_be_patched_with_mock(app: Celery) -> None:
    from unittest import mock

    with mock.patch.object(app.conf, "task_always_eager", True):
        assert app.conf.task_always_eager is True
    assert app.conf.task_always_eager is False


def test_public_names_match_celery() -> None:
    """Every name users import from celery, celery.exceptions/states/result/signals."""
    import celeriac.exceptions
    import celeriac.result
    import celeriac.signals
    import celeriac.states

    pairs = [("celery", celeriac), ("celery.exceptions", celeriac.exceptions),
             ("celery.states", celeriac.states), ("celery.result", celeriac.result),
             ("celery.signals", celeriac.signals)]
    wanted = {"celery": ["Celery", "Signature", "Task", "chain", "chord", "chunks",
                         "current_app", "current_task", "group", "maybe_signature",
                         "shared_task", "signature", "subtask", "uuid", "xmap", "xstarmap"]}
    for module_name, ours in pairs:
        theirs = need(module_name)
        names = wanted.get(module_name) or [n for n in getattr(theirs, "__all__", dir(theirs))
                                            if n[:1].isupper() or module_name.endswith("signals")]
        missing = [n for n in names if not n.startswith("_") and not hasattr(ours, n)]
        assert missing == [], (module_name, missing)
    assert len(celeriac.uuid()) == 36


#: settings whose default differs from Celery's on purpose (docs: differences from Celery)
DELIBERATE = {
    "task_acks_late": True,  # at-least-once by default
    "worker_prefetch_multiplier": 1,  # no hoarding behind long tasks
    "worker_soft_shutdown_timeout": 30.0,  # finish running tasks on SIGTERM
    "accept_content": ["json"],  # a list, equal in meaning to Celery's ('json',)
    "beat_scheduler": None,  # celeriac's own scheduler
    "worker_autoscaler": None,  # not a Celery class path
}


def test_defaults_equal_celery_except_deliberate_differences() -> None:
    celery_defaults = need("celery.app.defaults")
    for key, theirs in celery_defaults.DEFAULTS.items():
        if not key.islower():
            continue
        ours = config_module.DEFAULTS[key]
        if key in DELIBERATE:
            assert ours == DELIBERATE[key], key
        elif isinstance(ours, timedelta) and not isinstance(theirs, timedelta):
            assert ours.total_seconds() == theirs, key
        else:
            assert ours == theirs, key


def test_autodiscover_missing_package_raises_and_appconfig_paths(
        app: Celery, temp_packages: tuple[str, str]) -> None:
    with_tasks, _ = temp_packages
    app.finalize()
    with pytest.raises(ModuleNotFoundError):
        app.autodiscover_tasks(["no_such_package_celeriac_q"])
    app.autodiscover_tasks([f"{with_tasks}.NotAModuleConfig"])  # Django AppConfig path
    assert f"{with_tasks}.tasks.discovered" in app.tasks


def test_autodiscover_propagates_errors_inside_the_tasks_module(
        app: Celery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"pkg_broken_{uuid.uuid4().hex[:8]}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / name / "tasks.py").write_text("import not_installed_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    app.finalize()
    with pytest.raises(ModuleNotFoundError, match="not_installed_dependency_xyz"):
        app.autodiscover_tasks([name])


def test_only_candidate_keys_are_read_from_a_settings_object(app: Celery) -> None:
    class LazySettings:
        CELERY_TASK_DEFAULT_QUEUE = "lazyq"

        @property
        def DATABASES(self) -> dict[str, str]:
            raise AssertionError("must not be evaluated")

    app.config_from_object(LazySettings(), namespace="CELERY")
    assert app.conf.task_default_queue == "lazyq"


def test_bugreport_names_versions_and_masks_secrets() -> None:
    """Celery's ``app.bugreport()``: versions, platform, transport and changed settings,
    with passwords masked."""
    from celeriac import Celery
    from celeriac.version import __version__

    app = Celery("report", broker="redis://:hunter2@127.0.0.1:6379/0")
    app.conf.task_default_queue = "reports"
    text = app.bugreport()
    assert f"celeriac:{__version__}" in text
    assert "transport:redis" in text
    assert "task_default_queue: 'reports'" in text
    assert "hunter2" not in text


def test_task_annotations_set_task_attributes_at_finalize() -> None:
    """Celery's First steps: ``task_annotations = {'tasks.add': {'rate_limit': '10/m'}}``
    (it was accepted without effect). By name, then ``'*'``; objects with ``annotate``."""
    from celeriac.exceptions import ImproperlyConfigured

    class SlowOnes:
        def annotate(self, task: Any) -> dict[str, Any] | None:
            return {"time_limit": 30} if task.name.endswith("slow") else None

    app = Celery("anno", broker="memory://", set_as_current=False)
    app.conf.task_annotations = [SlowOnes(), {"anno.add": {"rate_limit": "10/m"},
                                              "*": {"acks_on_failure_or_timeout": False}}]

    @app.task(name="anno.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="anno.slow")
    def slow() -> None:
        return None

    app.finalize()
    assert add.rate_limit == "10/m" and slow.rate_limit is None
    assert slow.time_limit == 30 and add.time_limit is None
    assert add.acks_on_failure_or_timeout is False and slow.acks_on_failure_or_timeout is False

    refused = Celery("anno2", broker="memory://", set_as_current=False)
    refused.conf.task_annotations = {"*": {"@__call__": lambda fun, *a, **kw: fun(*a, **kw)}}

    @refused.task
    def other() -> None:
        return None

    with pytest.raises(ImproperlyConfigured, match="method annotations"):
        refused.finalize()


def test_task_annotations_apply_to_a_task_registered_after_finalize() -> None:
    """Celery annotates each task as it binds it: a task module imported once the app
    is finalized gets its annotations too, class-based tasks as well."""
    from celeriac import Task

    app = Celery("late", broker="memory://", set_as_current=False)
    app.conf.task_annotations = {"late.add": {"rate_limit": "10/m"},
                                 "*": {"default_retry_delay": 11}}
    app.finalize()

    @app.task(name="late.add")
    def add(x: int, y: int) -> int:
        return x + y

    class Mul(Task):
        name = "late.mul"

        def run(self, x: int, y: int) -> int:
            return x * y

    mul = app.register_task(Mul())
    assert add.rate_limit == "10/m" and add.default_retry_delay == 11
    assert mul.rate_limit is None and mul.default_retry_delay == 11
