"""Seeds 001 and 003 (Websauna, Kuma): configuration through Celery's pre-4.0 names
(``CELERY_ALWAYS_EAGER``, ``CELERYD_CONCURRENCY``, ``CELERY_IMPORTS``...) and the
Django ``CELERY_`` namespace, read with ``config_from_object``, honoured by a real worker.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from workerproc import project

SETTINGS = '''
    CELERY_ALWAYS_EAGER = False
    CELERYD_CONCURRENCY = 3
    CELERY_DEFAULT_QUEUE = "kuma"
    CELERY_IMPORTS = ("proj_tasks",)
'''

PROJ = '''
    from celeriac import Celery

    app = Celery("proj")
    app.config_from_object("proj_settings")
'''

TASKS = '''
    from celeriac import shared_task


    @shared_task
    def update_btc_rate(rate):
        return {"rate": rate}
'''


def test_old_style_settings_module_drives_the_worker(tmp_path: Path) -> None:
    (tmp_path / "proj_settings.py").write_text(SETTINGS.replace("\n    ", "\n"))
    (tmp_path / "proj_tasks.py").write_text(TASKS.replace("\n    ", "\n"))
    with project(tmp_path, PROJ) as proj, proj.worker(concurrency=None) as worker:
        assert "concurrency 3" in worker.log
        assert "queues: kuma" in worker.log
        assert "proj_tasks.update_btc_rate" in worker.log
        res = proj.app.send_task("proj_tasks.update_btc_rate", (42.5,))
        assert res.get(timeout=30) == {"rate": 42.5}
        assert proj.app.broker.stats("kuma").ready == 0
        assert proj.app.conf.task_always_eager is False
        assert proj.app.conf.worker_concurrency == 3


def test_always_eager_runs_in_process_without_a_worker(tmp_path: Path) -> None:
    source = '''
        from celeriac import Celery

        class Settings:
            CELERY_ALWAYS_EAGER = True
            CELERY_EAGER_PROPAGATES_EXCEPTIONS = True

        app = Celery("proj_kuma_eager")
        app.config_from_object(Settings)

        @app.task
        def add(x, y):
            return x + y
    '''
    with project(tmp_path, source, module="proj_kuma_eager") as proj:
        res = proj.client().add.delay(2, 2)
        assert res.get() == 4
        assert res.state == "SUCCESS"
        assert not proj.db_path.exists(), "an eager call must not touch the broker"


def test_django_namespace_settings(tmp_path: Path) -> None:
    source = '''
        from celeriac import Celery

        class settings:
            CELERY_TASK_ALWAYS_EAGER = False
            CELERY_TASK_DEFAULT_QUEUE = "django"
            CELERY_WORKER_CONCURRENCY = 2
            DEBUG = True

        app = Celery("proj")
        app.config_from_object(settings, namespace="CELERY")

        @app.task
        def add(x, y):
            return x + y
    '''
    with project(tmp_path, source) as proj, proj.worker(concurrency=None) as worker:
        assert "queues: django" in worker.log
        assert "concurrency 2" in worker.log
        assert proj.client().add.delay(20, 22).get(timeout=30) == 42


def test_old_style_settings_on_rabbitmq_with_rpc_results(tmp_path: Path,
                                                         rabbitmq_url: str) -> None:
    """Seed 003 runs Kuma on RabbitMQ: ``BROKER_URL`` an ``amqp://`` URL and results
    through ``rpc://``, in Celery 3's names."""
    pytest.importorskip("amqp")
    settings = SETTINGS + f'''
    BROKER_URL = {rabbitmq_url!r}
    CELERY_RESULT_BACKEND = "rpc://"
    '''
    (tmp_path / "proj_settings.py").write_text(settings.replace("\n    ", "\n"))
    (tmp_path / "proj_tasks.py").write_text(TASKS.replace("\n    ", "\n"))
    with project(tmp_path, PROJ) as proj, proj.worker(concurrency=None) as worker:
        assert "queues: kuma" in worker.log and "results: rpc://" in worker.log
        res = proj.app.send_task("proj_tasks.update_btc_rate", (42.5,))
        assert res.get(timeout=30) == {"rate": 42.5}
        assert proj.app.broker.url == rabbitmq_url
