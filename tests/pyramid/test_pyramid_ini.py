"""Reading the ini file: pyramid_celery's sections, types, interpolation, clear errors."""

from __future__ import annotations

import logging
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pyramidsite import require_pyramid

from celeriac.exceptions import ImproperlyConfigured

SEED = """
[DEFAULT]
debug = true

[app:main]
use = call:trees:main

[celery]
BROKER_URL = redis://localhost:6379/3
CELERY_IMPORTS =
    websauna.system.devop.tasks
    trees.tasks
CELERY_ALWAYS_EAGER = false
CELERYD_CONCURRENCY = 4
CELERYD_TASK_SOFT_TIME_LIMIT = 2.5
accept_content = json, msgpack
result_backend = sqlite:///%(here)s/results.sqlite3
timezone = Europe/Helsinki
site_name = %(site)s

[celery:broker_transport_options]
visibility_timeout = 18000
fanout_prefix = true
label = my label

[celerybeat:backup]
task = backup
type = timedelta
schedule = {"hours": 24}

[celerybeat:update_conversion_rates]
task = update_conversion_rates
type = timedelta
schedule = {"hours": 1}

[celerybeat:nightly]
task = trees.tasks.report
type = crontab
schedule = {"hour": 0, "minute": 30}
args = [16, 16]
kwargs = {"boom": "shaka"}
options = {"queue": "reports"}

[celerybeat:every_thirty]
task = trees.tasks.ping
type = integer
schedule = 30

[celeryroute:trees.tasks.report]
queue = slow_tasks
routing_key = turtle
"""


@pytest.fixture(autouse=True)
def _pyramid() -> None:
    require_pyramid()


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "site.ini"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_seed_sections(tmp_path: Path) -> None:
    from celeriac.contrib.pyramid import ini
    from celeriac.schedules import crontab

    got = ini.read(write(tmp_path, SEED), {"site": "trees"}).settings
    assert got["BROKER_URL"] == "redis://localhost:6379/3"
    assert got["CELERY_IMPORTS"] == ["websauna.system.devop.tasks", "trees.tasks"]
    assert got["CELERY_ALWAYS_EAGER"] is False
    assert got["CELERYD_CONCURRENCY"] == 4
    assert got["CELERYD_TASK_SOFT_TIME_LIMIT"] == 2.5
    assert got["accept_content"] == ["json", "msgpack"]
    assert got["result_backend"] == f"sqlite:///{tmp_path}/results.sqlite3"
    assert got["timezone"] == "Europe/Helsinki"
    assert got["site_name"] == "trees"
    assert "debug" not in got and "here" not in got  # [DEFAULT] and PasteDeploy's variables
    assert got["broker_transport_options"] == {"visibility_timeout": 18000,
                                               "fanout_prefix": True, "label": "my label"}
    schedule = got["beat_schedule"]
    assert schedule["backup"] == {"task": "backup", "schedule": timedelta(hours=24)}
    assert schedule["update_conversion_rates"]["schedule"] == timedelta(hours=1)
    nightly = schedule["nightly"]
    assert nightly["schedule"] == crontab(hour=0, minute=30)
    assert (nightly["args"], nightly["kwargs"], nightly["options"]) == (
        [16, 16], {"boom": "shaka"}, {"queue": "reports"})
    assert schedule["every_thirty"]["schedule"] == 30
    assert got["task_routes"] == {"trees.tasks.report": {"queue": "slow_tasks",
                                                         "routing_key": "turtle"}}


def test_app_configured_like_celery(tmp_path: Path) -> None:
    from celeriac import Celery
    from celeriac.contrib.pyramid import configure

    app = Celery("inicheck", set_as_current=False)
    configure(app, write(tmp_path, SEED), {"site": "trees"})
    conf = app.conf
    assert conf.broker_url == "redis://localhost:6379/3"
    assert tuple(conf.imports) == ("websauna.system.devop.tasks", "trees.tasks")
    assert conf.worker_concurrency == 4 and conf.task_always_eager is False
    assert conf.task_soft_time_limit == 2.5
    assert set(conf.beat_schedule) == {"backup", "update_conversion_rates", "nightly",
                                       "every_thirty"}
    assert conf.broker_transport_options["visibility_timeout"] == 18000


@pytest.mark.parametrize(("section", "message"), [
    ("[celery]\nCELERYD_CONCURRENCY = four\n",
     "[celery] CELERYD_CONCURRENCY = 'four': expected a number"),
    ("[celery]\ntask_always_eager = maybe\n",
     "[celery] task_always_eager = 'maybe': expected true or false"),
    ("[celery]\nbroker_transport_options = {oops\n",
     "[celery] broker_transport_options = '{oops' is not valid JSON"),
    ("[celerybeat:x]\ntask = t\ntype = weekly\nschedule = {}\n",
     "[celerybeat:x] type = 'weekly': expected timedelta, crontab or integer"),
    ("[celerybeat:x]\ntask = t\ntype = timedelta\nschedule = {\"hours\": 1\n",
     "[celerybeat:x] schedule = '{\"hours\": 1' is not valid JSON"),
    ("[celerybeat:x]\ntask = t\ntype = timedelta\nschedule = {\"fortnights\": 1}\n",
     "[celerybeat:x] schedule = '{\"fortnights\": 1}'"),
    ("[celerybeat:x]\ntask = t\ntype = integer\nschedule = 5\nargz = [1]\n",
     "[celerybeat:x] argz: unknown key"),
    ("[celerybeat:x]\ntype = integer\nschedule = 5\n", "[celerybeat:x] task: missing"),
    ("[celerybeat:x]\ntask = t\ntype = integer\nschedule = 5\nkwargs = [1]\n",
     "[celerybeat:x] kwargs: expected a JSON object"),
    ("[celeryroute:t]\nqueue = q\nqueeu = r\n", "[celeryroute:t] queeu: unknown key"),
    ("[celery]\nbroker_url = %(missing)s\n", "[celery] broker_url:"),
])
def test_errors_name_section_and_key(tmp_path: Path, section: str, message: str) -> None:
    from celeriac.contrib.pyramid import ini

    path = write(tmp_path, section)
    with pytest.raises(ImproperlyConfigured) as caught:
        ini.read(path)
    assert path in str(caught.value) and message in str(caught.value)


def test_missing_file_and_bad_variables(tmp_path: Path) -> None:
    from celeriac.contrib.pyramid import ini

    with pytest.raises(ImproperlyConfigured, match="no such file"):
        ini.read(str(tmp_path / "nope.ini"))
    with pytest.raises(ImproperlyConfigured, match="--ini-var: 'oops' is not key=value"):
        ini.parse_variables("a=1,oops")
    assert ini.parse_variables("user=sontek,password=OhYeah!") == {
        "user": "sontek", "password": "OhYeah!"}


def test_logging_sections_are_applied(tmp_path: Path, caplog: Any) -> None:
    from celeriac.contrib.pyramid import ini

    path = write(tmp_path, """
        [loggers]
        keys = root, inicheck

        [handlers]
        keys = file

        [formatters]
        keys = plain

        [logger_root]
        level = WARNING
        handlers =

        [logger_inicheck]
        level = DEBUG
        handlers = file
        qualname = inicheck.logging
        propagate = 0

        [handler_file]
        class = FileHandler
        args = ('%(here)s/app.log', 'a')
        formatter = plain

        [formatter_plain]
        format = %(levelname)s %(name)s %(message)s
        """)
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        ini.apply_logging(ini.read(path))
        logging.getLogger("inicheck.logging").debug("hello from the ini")
    finally:
        for handler in logging.getLogger("inicheck.logging").handlers:
            handler.close()
        logging.getLogger("inicheck.logging").handlers.clear()
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
    assert (tmp_path / "app.log").read_text() == "DEBUG inicheck.logging hello from the ini\n"
