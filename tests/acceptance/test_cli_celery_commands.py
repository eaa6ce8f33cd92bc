"""Acceptance: Celery's commands on ``celeriac`` through real processes: global options
(``--config``, ``--loader``, ``--skip-checks``, ``-C``), ``shell``, ``report``,
``migrate`` (SQLite -> Redis under a test prefix), ``upgrade settings``, ``list
bindings``, ``logtool`` over a real worker's log, ``graph`` and ``amqp`` (RabbitMQ).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from workerproc import Project, project, project_fixture

PROJ = """
    import os
    from celeriac import Celery

    app = Celery("proj")
    if os.environ.get("TEST_PREFIX"):
        app.conf.broker_transport_options = {"global_keyprefix": os.environ["TEST_PREFIX"]}
    app.conf.dashboard_secret_key = "hunter2"


    @app.task
    def add(x, y):
        return x + y


    @app.task
    def boom():
        raise ValueError("boom")
"""


proj = project_fixture(PROJ)


def test_config_module_loader_and_flags(proj: Project) -> None:
    (proj.path / "settings_mod.py").write_text("task_default_queue = 'from_config'\n"
                                                "result_backend_transport_options = {}\n")
    shown = proj.cli("--config", "settings_mod", "--loader", "default", "--skip-checks", "-C",
                     "report")
    assert shown.returncode == 0, shown.stderr
    assert "task_default_queue: 'from_config'" in shown.stdout
    env = proj.cli("-C", "shell", "--python", SKIP_CHECKS="any text",
                   input="import os; print(os.environ['CELERY_SKIP_CHECKS'], "
                         "os.environ['NO_COLOR'])\n")
    assert "true 1" in env.stdout, env.stderr
    refused = proj.cli("--loader", "djcelery.loaders.DjangoLoader", "report")
    assert refused.returncode == 2 and "no custom loaders" in refused.stderr
    missing = proj.cli("--config", "no_such_settings", "report")
    assert missing.returncode == 1 and "--config no_such_settings" in missing.stderr


def test_report_masks_secrets_and_passwords(proj: Project) -> None:
    shown = proj.cli("--result-backend", "redis://user:s3cret@127.0.0.1:1/0", "report")
    assert shown.returncode == 0, shown.stderr
    assert "celeriac:" in shown.stdout and "platform -> system:" in shown.stdout
    assert "broker   -> native_delay:yes" in shown.stdout  # the SQLite broker's capabilities
    assert "dashboard_secret_key: '********'" in shown.stdout
    assert "hunter2" not in shown.stdout and "s3cret" not in shown.stdout


def test_shell_has_the_app_canvas_and_tasks(proj: Project) -> None:
    script = ("print('sum', add.apply((2, 3)).get(), celery is app, "
              "type(group(add.s(1, 1))).__name__, 'boom' in dir())\n")
    run = proj.cli("shell", "--python", input=script)
    assert run.returncode == 0, run.stderr
    assert "sum 5 True group True" in run.stdout
    bare = proj.cli("shell", "--python", "-T", input="print('add' in dir(), 'app' in dir())\n")
    assert "False True" in bare.stdout
    assert "no green-thread" in proj.cli("shell", "--gevent").stderr
    if importlib.util.find_spec("IPython") is None:  # a shell asked for must be there
        forced = proj.cli("shell", "-I")
        assert forced.returncode == 1 and "ipython is not installed" in forced.stderr


def test_migrate_sqlite_to_redis_copies_or_moves_with_filters(
        proj: Project, redis_url: str, key_prefix: str) -> None:
    client = proj.client()
    sent = [client.add.delay(i, i).id for i in range(3)]
    other = client.boom.delay().id
    copied = proj.cli("migrate", f"sqlite:///{proj.db_path}", redis_url, "-T", "proj.add",
                      "-Q", "celery:moved", TEST_PREFIX=key_prefix)
    assert copied.returncode == 0, copied.stderr
    assert "Migrated 3 tasks" in copied.stdout and "copied" in copied.stdout
    assert proj.app.broker.stats("celery").ready == 4  # a copy leaves the source alone
    from celeriac.brokers.registry import broker_for_url

    redis_broker = broker_for_url(redis_url, options={"global_keyprefix": key_prefix})
    try:
        moved = proj.cli("migrate", f"sqlite:///{proj.db_path}", redis_url, "-a", "-n", "2",
                         "-T", "proj.add", "-Q", "celery:moved", TEST_PREFIX=key_prefix)
        assert moved.returncode == 0, moved.stderr
        assert "Migrated 2 tasks" in moved.stdout
        left = proj.app.broker.stats("celery").ready
        assert left == 2  # one add (limit 2) and the boom task stay
        got = redis_broker.receive(["moved"], owner="test", limit=10, timeout=1)
        ids = [d.message.headers["id"] for d in got]
        assert len(ids) == 5 and set(ids) == set(sent) and other not in ids
        assert all(d.message.headers["task"] == "proj.add" for d in got)
    finally:
        redis_broker.close()


def test_upgrade_settings_rewrites_old_names(proj: Project) -> None:
    path = proj.path / "celeryconfig.py"
    path.write_text("BROKER_URL = 'redis://'\nCELERY_ALWAYS_EAGER = True\n"
                    "MY_BROKER_URL = 1\n")
    run = proj.raw_cli("upgrade", "settings", str(path))
    assert run.returncode == 0, run.stderr
    assert path.read_text() == ("broker_url = 'redis://'\ntask_always_eager = True\n"
                                "MY_BROKER_URL = 1\n")
    assert (proj.path / "celeryconfig.py.orig").read_text().startswith("BROKER_URL")
    django = proj.path / "settings.py"
    django.write_text("CELERYD_CONCURRENCY = 4\n")
    assert proj.raw_cli("upgrade", "settings", str(django), "--django",
                        "--no-backup").returncode == 0
    assert django.read_text() == "CELERY_WORKER_CONCURRENCY = 4\n"
    assert not (proj.path / "settings.py.orig").exists()
    again = proj.raw_cli("upgrade", "settings", str(django))
    assert "Does not seem to require any changes" in again.stdout


def test_list_bindings_shows_declared_queues(tmp_path: Path) -> None:
    source = PROJ + """
    app.conf.task_queues = [{"name": "hi", "exchange": "work", "routing_key": "work.hi"},
                            {"name": "lo"}]
"""
    with project(tmp_path, source) as proj:
        run = proj.cli("list", "bindings")
    assert run.returncode == 0, run.stderr
    rows = [line.split() for line in run.stdout.splitlines()]
    assert ["hi", "work", "work.hi"] in rows and ["lo", "lo", "lo"] in rows
    assert "routes by queue name" in run.stdout


def test_logtool_reads_a_real_worker_log(proj: Project) -> None:
    with proj.worker("-n", "lt@%h") as worker:
        client = proj.client()
        assert client.add.delay(1, 2).get(timeout=30) == 3
        failed = client.boom.delay()
        with pytest.raises(ValueError):
            failed.get(timeout=30)
        worker.wait_for_log("failed in")
    log = str(worker.log_path)
    stats = proj.cli("logtool", "stats", log)
    assert stats.returncode == 0, stats.stderr
    assert "Task total: 2" in stats.stdout and "Task errors: 1" in stats.stdout
    assert "Task success: 1" in stats.stdout and "proj.add: 1" in stats.stdout
    errors = proj.cli("logtool", "errors", log).stdout.strip().splitlines()
    assert len(errors) == 1 and failed.id in errors[0]
    assert "ValueError" in proj.cli("logtool", "traces", log).stdout
    assert proj.cli("logtool", "incomplete", log).stdout.strip() == ""
    assert "ready." in proj.cli("logtool", "debug", log).stdout


def test_graph_workers_and_refused_bootsteps(proj: Project) -> None:
    with proj.worker("-n", "gw@%h", "-Q", "celery,other"):
        proj.client().add.delay(1, 1).get(timeout=30)
        dot = proj.cli("graph", "workers")
    assert dot.returncode == 0, dot.stderr
    assert dot.stdout.startswith("digraph workers {")
    assert '"queue:other" -> "node:gw@' in dot.stdout
    refused = proj.cli("graph", "bootsteps")
    assert refused.returncode == 1 and "no bootsteps" in refused.stderr


def test_amqp_refuses_other_brokers(proj: Project) -> None:
    run = proj.cli("amqp", "queue.purge", "celery")
    assert run.returncode == 1 and "celeriac purge" in run.stderr


def test_amqp_admin_commands_on_rabbitmq(tmp_path: Path, rabbitmq_url: str) -> None:
    with project(tmp_path, PROJ, broker_url=rabbitmq_url,
                 backend_url=f"sqlite:///{tmp_path / 'results.sqlite3'}") as proj:
        assert "ok." in proj.cli("amqp", "exchange.declare", "adm", "direct").stdout
        declared = proj.cli("amqp", "queue.declare", "adm.q", "no", "yes")
        assert "queue:adm.q messages:0 consumers:0" in declared.stdout, declared.stderr
        assert proj.cli("amqp", "queue.bind", "adm.q", "adm", "k").returncode == 0
        assert proj.cli("amqp", "basic.publish", "hello", "adm", "k").returncode == 0
        session = proj.cli("amqp", input="basic.get adm.q\nbasic.ack 1\n"
                                         "queue.declare adm.q yes\nnope\n")
        assert "b'hello'" in session.stdout or "'hello'" in session.stdout, session.stderr
        assert "queue:adm.q messages:0" in session.stdout  # acknowledged on the same channel
        assert "unknown command 'nope'" in session.stderr
        assert proj.cli("amqp", "basic.publish", "x", "", "adm.q").returncode == 0
        assert "1 messages deleted." in proj.cli("amqp", "queue.purge", "adm.q").stdout
        assert "0 messages deleted." in proj.cli("amqp", "queue.delete", "adm.q").stdout
        assert proj.cli("amqp", "exchange.delete", "adm").returncode == 0
        missing = proj.cli("amqp", "queue.declare", "adm.q", "yes")
        assert missing.returncode == 1 and "NotFound" in missing.stderr


def test_purge_defaults_to_the_declared_queues(tmp_path: Path) -> None:
    source = PROJ + """
    app.conf.task_queues = [{"name": "hi"}, {"name": "lo"}]
"""
    with project(tmp_path, source) as proj:
        client = proj.client()
        for queue in ("hi", "lo", "elsewhere"):
            client.add.apply_async((1, 1), queue=queue)
        run = proj.cli("purge", "-f")
        assert run.returncode == 0, run.stderr
        assert "Purged 2 messages from 2 known task queues." in run.stdout
        stats = {q: proj.app.broker.stats(q).ready for q in ("hi", "lo", "elsewhere")}
    assert stats == {"hi": 0, "lo": 0, "elsewhere": 1}
