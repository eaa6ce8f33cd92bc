"""A worker whose result store cannot work stops at start-up naming ``result_backend``
(issue 9, point 5), instead of printing "ready" and failing on the first message."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from celeriac import Celery
from celeriac.exceptions import ImproperlyConfigured
from celeriac.worker.main import Worker


def start_worker(tmp_path: Path, backend: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "proj.py").write_text(textwrap.dedent(f'''
        from celeriac import Celery
        app = Celery("proj", broker="sqlite:///{tmp_path}/db.sqlite3", backend={backend!r})

        @app.task
        def add(x, y):
            return x + y
    '''))
    env = {"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "celeriac", "-A", "proj", "worker", "-P",
                           "solo", "-l", "INFO"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=90)


@pytest.mark.parametrize("backend", ["django-db", "rpc://", "mongodb://localhost/x"])
def test_an_unusable_result_backend_stops_the_worker(tmp_path: Path, backend: str) -> None:
    done = start_worker(tmp_path, backend)
    assert done.returncode == 1
    assert "result_backend" in done.stderr and "ready." not in done.stdout + done.stderr


def test_the_check_reads_the_store_once() -> None:
    app = Celery("v", broker="memory://", backend="memory://", set_as_current=False)
    Worker(app, pool="solo", setup_logs=False).check_result_backend()  # usable: no error
    broken = Celery("v", broker="memory://", backend="sqlite:////proc/none/x.db",
                    set_as_current=False)
    with pytest.raises(ImproperlyConfigured, match="result_backend sqlite:////proc/none"):
        Worker(broken, pool="solo", setup_logs=False).check_result_backend()
